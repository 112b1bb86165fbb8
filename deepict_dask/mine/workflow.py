"""The mining steps a user runs, built from the API in :mod:`deepict_dask.mine.api`.

Each function is one step of ``deepict mine`` (and of :func:`run_mine`, the unsupervised part in one
go): it checks that the step before it has run (one error naming the command to run first), does
its work on the active Dask scheduler and writes the files :class:`MineLayout` names, atomically.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path, remove_path
from deepict_dask.layout import MineLayout
from deepict_dask.mine import api
from deepict_dask.mine.options import (
    CentreOptions,
    ChooseKOptions,
    ClusterOptions,
    EncodeOptions,
    PatchOptions,
)

Paths = Sequence[str | os.PathLike]

# what each step writes, and the command that writes it (named when a later step finds it missing)
_STEPS = {"patches": ("patches", "deepict mine patches TOMO... -o {dir}"),
          "autoencoder": ("autoencoder", "deepict mine train-ae {dir}"),
          "codes": ("codes", "deepict mine encode {dir}"),
          "labels": ("clusters", "deepict mine cluster {dir} --k K")}


def require(layout: MineLayout, what: str) -> Path:
    """The path of a prior step's output; missing, one :class:`InputError` saying which command writes it."""
    attr, command = _STEPS[what]
    path = getattr(layout, attr)
    if not path.exists():
        raise InputError(f"no {attr} yet: run `{command.format(dir=layout.root)}` first", path)
    return path


def _layout(out: str | os.PathLike | MineLayout) -> MineLayout:
    return out if isinstance(out, MineLayout) else MineLayout.at(out)


def check_patch_fits(tomograms: Paths, patch_shape: Sequence[int]) -> None:
    """Fail before any work when a patch is larger than one of the tomograms."""
    from deepict_dask.io import open_volume
    from deepict_dask.io.volume import spatial_shape

    for path in tomograms:
        shape = spatial_shape(open_volume(path))
        if any(p > s for p, s in zip(patch_shape, shape)):
            raise InputError(f"patch of {list(patch_shape)} voxels (z, y, x) is larger than the tomogram "
                             f"({list(shape)} voxels)", path)


def make_patches(tomograms: Paths, out: str | os.PathLike | MineLayout, centres: CentreOptions = CentreOptions(),
                 patches: PatchOptions = PatchOptions()) -> pd.DataFrame:
    """Patch centres (DoG or grid) and the patch stack of ``tomograms`` under ``out``.

    Parameters
    ----------
    tomograms
        MRC or (OME-)Zarr paths.
    out
        The mining directory; gets ``centres.csv``, ``patches.zarr``, ``patches.csv`` and
        ``tomograms.json`` (the inputs' paths, for the gallery).
    centres, patches
        :class:`CentreOptions` and :class:`PatchOptions`.

    Returns
    -------
    The patches table (one row per stored patch).
    """
    import zarr

    from deepict_dask.io import open_volume
    from deepict_dask.io.coords import write_table
    from deepict_dask.io.volume import voxel_size_of

    layout = _layout(out)
    check_patch_fits(tomograms, patches.patch_shape)
    table = api.find_centres(tomograms, centres, patch_shape=patches.patch_shape)
    stored = api.extract_patches(tomograms, table, layout, patches)
    sizes = {float(np.mean(voxel_size_of(open_volume(p)))) for p in tomograms}
    if len(sizes) == 1:  # the training of the autoencoder reads it (EDSS3D too, through the weak labels)
        zarr.open_array(str(layout.patches), mode="r+").attrs["voxel_size"] = sizes.pop()
    write_table(table, layout.centres)
    return stored


def train_ae(out: str | os.PathLike | MineLayout, options: Any = None) -> Any:
    """Train the autoencoder on ``out``'s patches; the model goes to ``models/ae.safetensors``.

    ``options`` is a :class:`~deepict_dask.train.patch_stack.StackTrainOptions` (or a mapping). The
    training run (checkpoints, ``log.csv``) stays in ``models/ae_training``. Returns the TrainResult.
    """
    from deepict_dask.train import train_autoencoder

    layout = _layout(out)
    require(layout, "patches")
    remove_path(layout.ae_training)  # a fresh run: an earlier one's checkpoints would be resumed otherwise
    result = train_autoencoder(layout.patches, layout.ae_training, options)
    with atomic_path(layout.autoencoder) as tmp:
        shutil.copyfile(result.model_path, tmp)
    return result


def encode(out: str | os.PathLike | MineLayout, model: str | os.PathLike | None = None,
           options: EncodeOptions = EncodeOptions()) -> Any:
    """Encode ``out``'s patches: with ``model`` (default: ``out``'s autoencoder), or into rotation-invariant
    descriptors when ``options.codes`` is ``invariant`` (no model). Returns the codes array."""
    layout = _layout(out)
    require(layout, "patches")
    if model is None and options.codes == "autoencoder":
        model = require(layout, "autoencoder")
    return api.encode_patches(layout, model, options)


def new_patch_options(model: str | os.PathLike | None, patches: PatchOptions | None, options: EncodeOptions,
                      reference: MineLayout | None) -> tuple[PatchOptions, tuple[np.ndarray, np.ndarray] | None]:
    """How new tomograms' patches are cut to be compared with ``reference``'s clusters, and the z-scoring of
    invariant codes: ``(patch options, scaling or None)``.

    Autoencoder codes: the patch shape of ``model``. Invariant codes: the reference's codes give the patch
    shape and the scaling. ``patches`` only sets normalisation, low-pass and chunking; by default (``None``)
    the reference's patches' normalisation and low-pass, so new patches look like the clustered ones.
    """
    import zarr

    from deepict_dask.mine.encode import autoencoder_info_of, invariant_scaling

    scaling = None
    if options.codes == "invariant":
        if reference is None:
            raise InputError("invariant codes of new tomograms need the mining directory they are compared with")
        codes = require(reference, "codes")
        scaling = invariant_scaling(codes)
        shape = zarr.open_array(str(codes), mode="r").attrs["patch_shape"]
    else:
        if model is None:
            raise InputError("encoding new tomograms with autoencoder codes needs the autoencoder model")
        shape = autoencoder_info_of(model).patch_size  # a segmentation model is refused before any patch is cut
    if patches is None:
        patches = reference_patch_options(reference) if reference is not None else PatchOptions()
    return patches.model_copy(update={"patch_shape": tuple(int(s) for s in shape)}), scaling


def _patch_source(tomograms: Paths, centres: CentreOptions, opts: PatchOptions) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """``(centres found, patches table, PatchReader)`` of ``tomograms``: what :func:`make_patches` cuts,
    for the paths that encode patches without writing a stack."""
    from deepict_dask.mine.patches import patch_reader

    check_patch_fits(tomograms, opts.patch_shape)
    found = api.find_centres(tomograms, centres, patch_shape=opts.patch_shape)
    table, reader = patch_reader(api._volumes(tomograms), found, opts)
    return found, table, reader


def encode_new(tomograms: Paths, into: str | os.PathLike | MineLayout, model: str | os.PathLike | None,
               centres: CentreOptions = CentreOptions(), patches: PatchOptions | None = None,
               options: EncodeOptions = EncodeOptions(), *, reference: MineLayout | None = None,
               keep_patches: bool = True) -> pd.DataFrame:
    """Patches of new ``tomograms`` cut and encoded like an existing mining directory's, under ``into``.

    ``model``, ``patches``, ``options`` and ``reference`` as in :func:`new_patch_options` (``reference``
    is the directory whose clusters the new codes will be compared with). ``keep_patches=False`` writes
    the codes without the patch stack (each task cuts and encodes its own patches;
    :func:`~deepict_dask.mine.encode.write_codes_from`): enough to cluster a whole data set, not for a
    gallery or weak labels. Returns the patches table of ``into``.
    """
    from deepict_dask.io.coords import write_table
    from deepict_dask.mine.encode import write_codes_from

    opts, scaling = new_patch_options(model, patches, options, reference)
    if keep_patches:
        table = make_patches(tomograms, into, centres, opts)
        api.encode_patches(into, model, options, scaling)
        return table
    layout = _layout(into)
    found, table, reader = _patch_source(tomograms, centres, described_patch_options(opts, options))
    layout.root.mkdir(parents=True, exist_ok=True)
    write_codes_from(reader, layout.codes, model=model, opts=options, scaling=scaling, chunk=opts.chunk)
    remove_path(layout.patches)  # an earlier run's stack would no longer match these codes
    write_table(found, layout.centres)
    write_table(table, layout.patches_table)
    api.record_tomograms(layout, tomograms)
    return table


def reference_patch_options(layout: MineLayout) -> PatchOptions:
    """Normalisation and low-pass of ``layout``'s patch stack (defaults where it has none or they are not recorded)."""
    if not layout.patches.exists():
        return PatchOptions()
    from deepict_dask.mine.patches import open_patch_stack, stack_cut

    cut = stack_cut(open_patch_stack(layout.patches))
    return PatchOptions(normalization=cut.normalization, lowpass_sigma=cut.lowpass_sigma)


def reference_codes(layout: MineLayout, options: EncodeOptions = EncodeOptions()) -> EncodeOptions:
    """``options`` with the kind of codes of ``layout``, and for invariant codes the low-pass of the patches
    they describe (new patches are compared with its clusters, so they are described the same way)."""
    from deepict_dask.mine.encode import codes_kind, described_patches

    codes = require(layout, "codes")
    kind = codes_kind(codes)
    update: dict[str, Any] = {"codes": kind}
    if kind == "invariant":
        cut = described_patches(codes)  # None: codes from before it was recorded described the stack as it was
        update["invariant_lowpass"] = None if cut is None else cut["lowpass_sigma"]
    return options.model_copy(update=update)


def described_patch_options(opts: PatchOptions, options: EncodeOptions) -> PatchOptions:
    """How the paths without a patch stack cut patches to encode: invariant codes with their own low-pass
    (``options.invariant_lowpass``), autoencoder codes as ``opts`` says."""
    if options.codes == "invariant" and options.invariant_lowpass is not None:
        return opts.model_copy(update={"lowpass_sigma": float(options.invariant_lowpass)})
    return opts


def require_varied_codes(layout: MineLayout) -> None:
    """Fail when every patch has the same code: an autoencoder that collapsed (or stopped too early), or
    patches that are all alike, leave k-means nothing to separate, and the clusters would be noise."""
    import dask.array as da

    from deepict_dask.mine.encode import codes_kind

    codes = da.from_zarr(str(require(layout, "codes")))
    spread = float(codes.std(axis=0).max().compute(scheduler="threads"))
    if not spread > 1e-6 * max(1.0, float(abs(codes).max().compute(scheduler="threads"))):
        if codes_kind(layout.codes) == "invariant":
            raise InputError("every patch has the same code: the patches are all alike (an empty or constant "
                             "tomogram?); nothing to cluster", layout.codes)
        raise InputError("every patch has the same code: the autoencoder does not tell the patches apart; train it "
                         f"longer (deepict mine train-ae {layout.root} --overwrite --epochs N) and encode again",
                         layout.codes)


def cluster(out: str | os.PathLike | MineLayout, options: ClusterOptions = ClusterOptions()) -> np.ndarray:
    """k-means of ``out``'s codes (``clusters/``); returns the cluster of every patch."""
    layout = _layout(out)
    require_varied_codes(layout)
    return api.cluster_codes(layout, options)


def choose_k(out: str | os.PathLike | MineLayout, options: ChooseKOptions = ChooseKOptions()) -> pd.DataFrame:
    """Calinski-Harabasz and gap statistic per k of ``out``'s codes (``clusters/choose_k.csv``, ``.png``)."""
    layout = _layout(out)
    require_varied_codes(layout)
    return api.score_k(layout, options)


def gallery(out: str | os.PathLike | MineLayout, tomograms: Paths | None = None, options: Any = None,
            device: str = "auto") -> pd.DataFrame:
    """``gallery.html`` and ``clusters/clusters.csv``; overlays on ``tomograms`` (default: the recorded ones).

    Autoencoder codes need the autoencoder (its decoded cluster centres); invariant codes do not."""
    from deepict_dask.mine.encode import codes_kind
    from deepict_dask.mine.options import GalleryOptions

    layout = _layout(out)
    require(layout, "labels")
    model = require(layout, "autoencoder") if codes_kind(require(layout, "codes")) == "autoencoder" else None
    tomos = api.recorded_tomograms(layout) if tomograms is None else list(tomograms)
    return api.write_gallery(layout, tomos, model, options or GalleryOptions(), device)


def cluster_count(layout: MineLayout) -> int:
    """k of ``layout``'s clustering (the number of centres)."""
    from deepict_dask.mine.kmeans import read_centres

    return int(len(read_centres(layout.cluster_centres)))


def patch_clusters(layout: MineLayout) -> np.ndarray:
    """The cluster of every patch of ``layout`` (int64)."""
    import zarr

    require(layout, "labels")
    return np.asarray(zarr.open_array(str(layout.labels), mode="r")[:], dtype=np.int64)


def reconstructor(model: str | os.PathLike, device: str = "auto", batch: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping patches (n, Z, Y, X) to the autoencoder's reconstructions (its decoded images)."""
    import torch

    from deepict_dask.inference.devices import choose_device, inference_mode
    from deepict_dask.mine.encode import load_autoencoder

    dev = choose_device(device)
    net, _info = load_autoencoder(str(model), dev)

    def run(patches: np.ndarray) -> np.ndarray:
        out = []
        for a in range(0, len(patches), batch):
            x = torch.from_numpy(np.ascontiguousarray(patches[a:a + batch, None], dtype=np.float32)).to(dev)
            with inference_mode():
                out.append(net(x)[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,) + tuple(patches.shape[1:]), np.float32)

    return run


def edss3d_crop(patch_shape: Sequence[int]) -> list[int]:
    """Random-crop size for EDSS3D training: 3/4 of each patch edge, a multiple of 4 (the network's 2 poolings).

    Patches are cut around detected centres; trained on whole patches a fully convolutional network
    learns that the object is in the middle of the window, and fails on whole tomograms.
    """
    return [max(4, (3 * int(s) // 4) // 4 * 4) for s in patch_shape]


def edss3d_config(labels_dir: str | os.PathLike, classes: Sequence[str], *, name: str = "edss3d",
                  crop: Sequence[int] | None = None, options: Any = None) -> dict[str, Any]:
    """A ``deepict train`` config (mapping) for EDSS3D on the weak labels in ``labels_dir``.

    Built and validated by :func:`deepict_dask.train.patch_stack.stack_config` (the published
    recipe: softmax, cross-entropy, Adam 1e-3, batch 128, early stopping, augmentation, random
    crops); paths are relative to ``labels_dir``, where the config file goes.
    """
    from deepict_dask.train.patch_stack import StackTrainOptions, edss3d_train_config

    d = Path(labels_dir)
    opts = options if isinstance(options, StackTrainOptions) else StackTrainOptions.model_validate(options or {})
    if opts.crop is None and crop is not None:
        opts = opts.model_copy(update={"crop": list(crop)})
    cfg = edss3d_train_config(d / "patches.zarr", d / "labels.zarr", classes, d / "edss3d",
                              opts.model_copy(update={"name": opts.name or name}))
    dumped = cfg.model_dump(mode="json", exclude_defaults=True)
    data: dict[str, Any] = {"name": cfg.name, "dim": cfg.dim, "classes": list(cfg.classes),
                            "activation": cfg.activation, "model": dict(cfg.model), "data": dumped["data"]}
    data["data"]["patch_stack"] = {"patches": "patches.zarr", "labels": "labels.zarr"}
    data["augment"] = cfg.augment.model_dump(mode="json")
    data["loss"] = [t.model_dump(mode="json", exclude_defaults=True) for t in cfg.loss]
    data["optimizer"] = {"lr": cfg.optimizer.lr, **dumped.get("optimizer", {})}
    data["training"] = dumped["training"]
    data["output"] = {"dir": "edss3d", "model": f"edss3d/{cfg.name}.safetensors"}
    return data


@dataclass
class WeakLabelResult:
    """The written EDSS3D training set and its ``deepict train`` config."""

    out: Path
    train_config: Path
    classes: list[str]
    patches_per_class: dict[str, int]
    voxel_fraction: dict[str, float]


def weak_labels(out: str | os.PathLike | MineLayout, selection: dict[str, list[int]], labels_dir: str | os.PathLike,
                *, threshold: float = 0.5, polarity: Literal["dark", "bright"] = "dark",
                source: str | os.PathLike | None = None, overwrite: bool = False, device: str = "auto",
                train_options: Any = None) -> WeakLabelResult:
    """Weak labels of the selected clusters' patches from their decoded images, and ``train.yaml`` beside them.

    Parameters
    ----------
    out
        The mining directory (patches, clusters and the autoencoder must exist).
    selection
        ``{class: [cluster ids]}``.
    labels_dir
        Output directory: ``patches.zarr``, ``labels.zarr``, ``classes.json`` and ``train.yaml``
        (``deepict train labels_dir/train.yaml`` trains EDSS3D on them).
    threshold, polarity, source, overwrite
        See :func:`deepict_dask.mine.labels.write_weak_labels`.
    train_options
        :class:`~deepict_dask.train.patch_stack.StackTrainOptions` for the config (default: the
        published recipe, random crops of 3/4 of the patch).

    Returns
    -------
    WeakLabelResult
    """
    import yaml

    from deepict_dask.mine.labels import write_weak_labels

    layout = _layout(out)
    require(layout, "patches")
    clusters = patch_clusters(layout)
    model = require(layout, "autoencoder")
    written = write_weak_labels(layout.patches, reconstructor(model, device), clusters, selection, labels_dir,
                                k=cluster_count(layout), threshold=threshold, polarity=polarity, source=source,
                                overwrite=overwrite)
    try:
        from deepict_dask.mine.patches import open_patch_stack

        shape = [int(s) for s in open_patch_stack(layout.patches).shape[1:]]
        config = edss3d_config(written.out, written.classes, crop=edss3d_crop(shape), options=train_options)
        path = written.out / "train.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text("# deepict train train.yaml  -- EDSS3D on weak labels from `deepict mine labels`\n"
                           + yaml.safe_dump(config, sort_keys=False))
    except BaseException:
        remove_path(written.out)  # no training set without its config
        raise
    return WeakLabelResult(written.out, path, written.classes, written.patches_per_class, written.voxel_fraction)


def check_filter(out: str | os.PathLike | MineLayout, selection: dict[str, list[int]],
                 source: str | os.PathLike | None = None) -> tuple[Path | None, np.ndarray]:
    """``(autoencoder, cluster centres)`` of ``out`` after checking that the selection names existing,
    non-empty clusters (before any patch of a new tomogram is cut). The autoencoder is ``None`` for
    invariant codes, which need none."""
    from deepict_dask.mine.kmeans import read_centres
    from deepict_dask.mine.labels import check_selection, parse_selection

    layout = _layout(out)
    require(layout, "labels")
    kind = reference_codes(layout).codes
    model = require(layout, "autoencoder") if kind == "autoencoder" else None
    centre_vectors = read_centres(layout.cluster_centres)
    check_selection(parse_selection(selection, source), patch_clusters(layout), len(centre_vectors), source)
    return model, centre_vectors


def filter_tomograms(out: str | os.PathLike | MineLayout, tomograms: Paths, selection: dict[str, list[int]],
                     table: str | os.PathLike, *, centres: CentreOptions = CentreOptions(),
                     patches: PatchOptions | None = None, options: EncodeOptions = EncodeOptions(),
                     into: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                     overwrite: bool = False) -> pd.DataFrame:
    """The paper's test on new tomograms: their patches, encoded like ``out``'s (its autoencoder, or the
    same invariant descriptors and scaling), assigned to the nearest cluster centre; the patches of the
    selected clusters are written as a coordinate table.

    Parameters
    ----------
    out
        The mining directory (codes and clusters, and the autoencoder for autoencoder codes).
    tomograms
        New tomograms (MRC or OME-Zarr).
    selection
        ``{class: [cluster ids]}``; a kept patch's ``class`` is its class name.
    table
        Output table (``.csv``, ``.star``, ...), written atomically; columns ``cluster`` and ``patch``
        are added.
    centres, patches, options
        Where patches are cut (patch shape: the autoencoder's, or ``out``'s; normalisation and low-pass
        by default ``out``'s), and how they are encoded (the kind of codes is always ``out``'s).
    into
        Keep the new patches and codes in this mining directory. By default none are written: each Dask
        task cuts, encodes and assigns its own patches (:func:`~deepict_dask.mine.encode.nearest_clusters`).

    Returns
    -------
    The written table.
    """
    from deepict_dask.io.coords import write_table
    from deepict_dask.mine.encode import nearest_clusters
    from deepict_dask.mine.kmeans import assign
    from deepict_dask.mine.labels import parse_selection

    layout = _layout(out)
    model, centre_vectors = check_filter(layout, selection, source)
    options = reference_codes(layout, options)
    class_of = {c: name for name, ids in parse_selection(selection, source).items() for c in ids}
    if not overwrite and Path(table).exists():
        from deepict_dask.errors import OutputError

        raise OutputError("already exists (use --overwrite to replace it)", table)
    if into is not None:
        rows = encode_new(tomograms, into, model, centres, patches, options, reference=layout)
        nearest = assign(api._codes(_layout(into)), centre_vectors)
    else:  # fused: each task cuts, encodes and assigns its patches; nothing but the table is written
        opts, scaling = new_patch_options(model, patches, options, layout)
        _found, rows, reader = _patch_source(tomograms, centres, described_patch_options(opts, options))
        nearest = nearest_clusters(reader, centre_vectors, model=model, opts=options, scaling=scaling,
                                   chunk=opts.chunk)
    keep = np.isin(nearest, list(class_of))
    kept = rows.loc[keep].copy()
    kept["cluster"] = nearest[keep].astype(np.int64)
    kept["class"] = [class_of[int(c)] for c in kept["cluster"]]
    kept = kept.reset_index(drop=True)
    write_table(kept, table)
    return kept


def refuse_earlier_run(out: str | os.PathLike | MineLayout, overwrite: bool = False) -> None:
    """Fail when ``out`` holds an earlier run's outputs and ``overwrite`` is off (before any work)."""
    from deepict_dask.errors import OutputError

    layout = _layout(out)
    if not overwrite:
        for path in (layout.patches, layout.autoencoder, layout.codes, layout.labels, layout.gallery):
            if path.exists():
                raise OutputError("already exists (use --overwrite to replace the earlier run)", path)


def run_mine(config: Any, *, overwrite: bool = False, progress: bool = False,
             say: Callable[[str], None] = lambda line: None) -> pd.DataFrame:
    """The unsupervised part in one go: patches -> autoencoder -> codes -> (choose k) -> clusters -> gallery.

    The autoencoder is trained with invariant codes too (``config.encode.codes``): the weak labels of
    ``deepict mine labels`` come from its reconstructions of the selected patches. ``train: null``
    skips it (invariant codes only), for clusters and a gallery without the training time.

    Parameters
    ----------
    config
        A :class:`~deepict_dask.mine.config.MineConfig` (paths already absolute).
    overwrite
        Replace the outputs of an earlier run in ``config.out`` (refused otherwise, before any work).
    progress
        Show the autoencoder's training progress (standard error).
    say
        Called with one short line after each step.

    Returns
    -------
    The clusters table.
    """
    layout = MineLayout.at(config.out)
    refuse_earlier_run(layout, overwrite)
    table = make_patches(config.tomograms, layout, config.centres, config.patches)
    say(f"patches: {len(table)} of {config.patches.patch_shape} voxels -> {layout.patches}")
    if config.train is None:  # invariant codes need no model (the config refuses it otherwise)
        say(f"autoencoder: skipped (train: null); `deepict mine train-ae {layout.root}` trains it for weak labels")
    else:
        result = train_ae(layout, config.train.model_copy(update={"progress": progress}))
        say(f"autoencoder: {result.steps} steps, best validation loss {result.best.get('val_loss')} "
            f"-> {layout.autoencoder}")
    codes = encode(layout, None, config.encode)
    say(f"codes: {codes.shape[0]} x {codes.shape[1]} -> {layout.codes}")
    if config.choose_k is not None:
        scores = choose_k(layout, config.choose_k)
        say(f"choose k: scores for k = {', '.join(str(k) for k in scores['k'])} -> {layout.choose_k_table}")
    labels = cluster(layout, config.cluster)
    say(f"clusters: k = {config.cluster.k}, {int((np.bincount(labels) > 0).sum())} non-empty -> {layout.clusters}")
    clusters = gallery(layout, config.tomograms, config.gallery, config.encode.device)
    say(f"gallery: {layout.gallery}")
    return clusters
