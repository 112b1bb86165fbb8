"""``deepict mine STEP``: feature mining without labels (Autoencoder3D + k-means), then weak labels for EDSS3D.

Each step is a thin shell over :mod:`deepict_dask.mine.workflow`: flags become the step's options
model (:func:`deepict_dask.options.build`, so a bad value names its flag), the step runs, a short
summary is printed. Steps that cut or encode patches run on a Dask cluster (an embedded
LocalCluster by default; see the "Dask cluster" options).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from deepict_dask.cli.common import (
    add_cluster_args,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    refuse_existing,
)
from deepict_dask.cli.options_flags import add_option_flags, field_kind, option_values

# options field -> flag, per options model; type, choices, default and help come from the model
_CENTRE_FLAGS = {"sigma": "--sigma", "dog_sigma": "--dog-sigma", "dog_k": "--dog-k", "min_distance": "--min-distance",
                 "threshold": "--threshold", "max_peaks": "--max-peaks", "polarity": "--polarity", "block": "--block"}
_PATCH_FLAGS = {"normalization": "--normalization", "chunk": "--chunk", "lowpass_sigma": "--lowpass"}
_ENCODE_FLAGS = {"device": "--device", "batch_size": "--batch-size", "precision": "--precision"}
_KIND_FLAGS = {"codes": "--codes", "invariant_lowpass": "--invariant-lowpass"}
_CHOOSE_K_FLAGS = {"seed": "--seed", "sample": "--sample", "references": "--references"}
_CLUSTER_FLAGS = {"k": "--k", "seed": "--seed", "batch_size": "--batch-size", "epochs": "--epochs"}
_GALLERY_FLAGS = {"columns": "--columns", "max_clusters": "--max-clusters", "title": "--title"}
_TRAIN_AE_FLAGS = {"max_epochs": "--epochs", "patience": "--patience", "batch_size": "--batch-size",
                   "max_minutes": "--max-minutes", "device": "--device", "lr": "--lr", "seed": "--seed",
                   "centre_sigma": "--centre-sigma"}


def _model_flags(parser: Any, model: Any, flags: Mapping[str, str], *, unset: tuple[str, ...] = (),
                 help: Mapping[str, str] | None = None, metavar: Mapping[str, str] | None = None) -> None:
    """``flags`` of ``model`` (:func:`add_option_flags`) with their defaults in the help; counts read ``N``."""
    counts = {f: "N" for f in flags if field_kind(model, f) is int}
    add_option_flags(parser, model, flags, help=help, unset=unset, metavar=counts | dict(metavar or {}),
                     show_defaults=True)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "mine",
        help="feature mining without labels: autoencoder + k-means clusters, weak labels for EDSS3D",
        description="Unsupervised feature mining (Autoencoder3D + k-means, Zeng et al.): cut patches, train an "
        "autoencoder on them, encode, cluster, look at the clusters in an HTML gallery, turn the clusters you "
        "pick into weak labels and a 'deepict train' config for EDSS3D. Lengths are in voxels. "
        "'deepict mine run CONFIG' does the unsupervised part in one go.",
    )
    steps = p.add_subparsers(dest="step", metavar="STEP")
    p.set_defaults(func=lambda args: _no_step(p))

    s = steps.add_parser("patches", help="patch centres (DoG peaks or a grid) and the patch stack",
                         description="Find patch centres (Difference-of-Gaussians peaks, or --grid) in TOMO... "
                         "and cut the patches into DIR/patches.zarr (+ patches.csv, centres.csv).")
    s.add_argument("tomograms", nargs="+", metavar="TOMO", help="tomograms (MRC or OME-Zarr)")
    s.add_argument("-o", "--out", required=True, metavar="DIR", help="the mining directory")
    _centre_args(s)
    _patch_args(s)
    add_overwrite_arg(s, "an existing patch stack")
    add_cluster_args(s)
    s.set_defaults(func=_patches)

    s = steps.add_parser("train-ae", help="train the autoencoder on DIR's patches",
                         description="Train an Autoencoder3D on DIR/patches.zarr (MSE, Adam 1e-3, early stopping on "
                         "the validation loss); the best model goes to DIR/models/ae.safetensors.")
    s.add_argument("dir", metavar="DIR", help="the mining directory")
    _model_flags(s, _train_options(), _TRAIN_AE_FLAGS, help={
        "max_epochs": "at most N epochs; early stopping usually ends training first",
        "batch_size": "patches per step (default 8, as published)", "lr": "Adam learning rate",
        "max_minutes": "time budget: stop after M minutes, the best model kept",
        "seed": "seed of the validation split and the batches", "device": "auto: a GPU when visible"},
        metavar={"max_minutes": "M", "lr": "LR", "centre_sigma": "S", "device": "DEVICE"})
    s.add_argument("--filters", type=int, metavar="N", help="convolution channels (default 32, as published)")
    s.add_argument("--code-dim", type=int, metavar="N", help="numbers per code (default 32, as published)")
    s.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="180-degree rotations and intensity jitter of the training patches (default: off, as published)")
    add_progress_arg(s)
    add_overwrite_arg(s, "an existing autoencoder")
    s.set_defaults(func=_train_ae)

    s = steps.add_parser("encode", help="encode patches: autoencoder codes or rotation-invariant descriptors",
                         description="Encode DIR/patches.zarr into DIR/codes.zarr with DIR's autoencoder (or --model), "
                         "or with --codes invariant into rotation-invariant descriptors (no model). With TOMO... and "
                         "--into DIR2: cut the new tomograms' patches into DIR2 and encode them there, like DIR's.")
    s.add_argument("dir", metavar="DIR", help="the mining directory")
    s.add_argument("tomograms", nargs="*", metavar="TOMO", help="new tomograms to encode (needs --into)")
    s.add_argument("--into", metavar="DIR2", help="mining directory for the new tomograms' patches and codes")
    s.add_argument("--no-patches", action="store_true",
                   help="with --into: write only the codes (and tables), no patch stack; each task cuts and "
                        "encodes its own patches. Enough for 'cluster' on a whole data set, not for a gallery or "
                        "weak labels")
    s.add_argument("--model", metavar="AE", help="autoencoder model file (default DIR/models/ae.safetensors)")
    _encode_args(s, kind=True)
    _centre_args(s)
    add_overwrite_arg(s, "existing codes")
    add_cluster_args(s)
    s.set_defaults(func=_encode)

    s = steps.add_parser("choose-k", help="Calinski-Harabasz and gap statistic for several k",
                         description="Score k-means of DIR's codes for each k (DIR/clusters/choose_k.csv and .png). "
                         "The two indices often disagree: neither decides k alone; compare galleries.")
    s.add_argument("dir", metavar="DIR", help="the mining directory")
    s.add_argument("--ks", type=int, nargs="+", metavar="K", help="values of k (default 2 5 10 20 50 100)")
    _model_flags(s, _options("ChooseKOptions"), _CHOOSE_K_FLAGS, help={"seed": "k-means seed"})
    add_overwrite_arg(s, "existing scores")
    s.set_defaults(func=_choose_k)

    s = steps.add_parser("cluster", help="k-means of DIR's codes",
                         description="Cluster DIR/codes.zarr with k-means (MiniBatchKMeans, bounded memory, "
                         "reproducible with --seed) into DIR/clusters/.")
    s.add_argument("dir", metavar="DIR", help="the mining directory")
    _model_flags(s, _options("ClusterOptions"), _CLUSTER_FLAGS, help={"seed": "k-means seed"})
    add_overwrite_arg(s, "existing clusters")
    s.set_defaults(func=_cluster)

    s = steps.add_parser("gallery", help="HTML gallery of the clusters",
                         description="Write DIR/gallery.html (per cluster: size, decoded centre, average patch, "
                         "where its patches lie) and DIR/clusters/clusters.csv.")
    s.add_argument("dir", metavar="DIR", help="the mining directory")
    s.add_argument("--tomo", dest="tomograms", nargs="+", metavar="TOMO",
                   help="tomograms for the overlays (default: those 'deepict mine patches' cut)")
    _model_flags(s, _options("GalleryOptions"), _GALLERY_FLAGS, help={"title": "page title"}, metavar={"title": "TEXT"})
    s.add_argument("--device", default="auto", help="device of the decoder (default auto)")
    add_overwrite_arg(s, "an existing gallery")
    s.set_defaults(func=_gallery)

    s = steps.add_parser("labels", help="weak labels of the selected clusters + a train.yaml for EDSS3D",
                         description="Label the patches of the selected clusters from their decoded images "
                         "(min-max scaled, voxels <= --threshold are the class for dark objects) and write them "
                         "with a 'deepict train' config for EDSS3D to LABELDIR.")
    s.add_argument("dir", metavar="DIR", help="the mining directory")
    _select_arg(s)
    s.add_argument("-o", "--out", required=True, metavar="LABELDIR",
                   help="output: patches.zarr, labels.zarr, classes.json, train.yaml")
    s.add_argument("--threshold", type=float, default=0.5, help="on the min-max scaled decoded image (default 0.5)")
    s.add_argument("--polarity", choices=["dark", "bright"], default="dark",
                   help="dark (default): voxels <= threshold are the class (cryo-ET density as stored)")
    s.add_argument("--device", default="auto", help="device of the autoencoder (default auto)")
    g = s.add_argument_group("EDSS3D training (written to train.yaml)")
    g.add_argument("--batch-size", type=int, metavar="N", help="patches per step (default 128, as published)")
    g.add_argument("--filters", type=int, metavar="N", help="convolution channels (default 32, as published)")
    g.add_argument("--crop", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="random-crop size of the training patches (default 3/4 of the patch, a multiple of 4)")
    g.add_argument("--epochs", type=int, metavar="N", help="at most N epochs (default 200)")
    g.add_argument("--patience", type=int, metavar="N", help="stop after N epochs without improvement (default 20)")
    add_overwrite_arg(s, "an existing LABELDIR")
    s.set_defaults(func=_labels)

    s = steps.add_parser("filter", help="keep the patches of new tomograms that fall in selected clusters",
                         description="The paper's test on new tomograms: cut their patches, encode them like DIR's "
                         "(its autoencoder, or the same invariant descriptors), assign each to the nearest cluster "
                         "centre and write those in the selected clusters as a coordinate table (class = the "
                         "selection's class name). Each task cuts, encodes and assigns its own patches: no patch "
                         "stack is written unless --into asks for one.")
    s.add_argument("dir", metavar="DIR", help="the mining directory (codes, clusters; autoencoder for its codes)")
    s.add_argument("tomograms", nargs="+", metavar="TOMO", help="new tomograms")
    _select_arg(s)
    s.add_argument("-o", "--out", required=True, metavar="TABLE", help="output table (.csv, .star, ...)")
    s.add_argument("--into", metavar="DIR2", help="also write the new patches and codes to DIR2 (default: none written)")
    _encode_args(s)
    _centre_args(s)
    add_overwrite_arg(s, "an existing table")
    add_cluster_args(s)
    s.set_defaults(func=_filter)

    s = steps.add_parser("run", help="the unsupervised part in one go from a config",
                         description="patches -> train-ae (train: null skips it for invariant codes) -> encode "
                         "-> choose-k (optional) -> cluster -> gallery, as CONFIG (YAML; see 'deepict mine "
                         "init-config') says.")
    s.add_argument("config", metavar="CONFIG", help="mining configuration (YAML)")
    add_progress_arg(s)
    add_overwrite_arg(s, "the outputs of an earlier run")
    add_cluster_args(s)
    s.set_defaults(func=_run)

    s = steps.add_parser("init-config", help="write a commented example configuration for 'deepict mine run'")
    s.add_argument("-o", "--out", metavar="FILE", help="write it to FILE (default: print it)")
    add_overwrite_arg(s, "an existing FILE")
    s.set_defaults(func=_init_config)


def _no_step(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---------------------------------------------------------------------------------------------- arguments


def _options(name: str) -> Any:
    """An options model of :mod:`deepict_dask.mine.options` by name (imported when the parser is built)."""
    from deepict_dask.mine import options

    return getattr(options, name)


def _train_options() -> Any:
    from deepict_dask.train.patch_stack import StackTrainOptions

    return StackTrainOptions


def _centre_args(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("patch centres (voxels)")
    g.add_argument("--grid", type=int, metavar="STRIDE", help="a regular grid with this stride instead of DoG peaks")
    _model_flags(g, _options("CentreOptions"), _CENTRE_FLAGS, metavar={
        "sigma": "VOXELS", "dog_sigma": "VOXELS", "dog_k": "K", "min_distance": "VOXELS", "threshold": "T"})


def _patch_args(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("patches")
    g.add_argument("--patch-size", dest="patch_shape", type=int, nargs="+", metavar="N",
                   help="patch edge, or Z Y X (default 32; multiples of 4 for the autoencoder)")
    _model_flags(g, _options("PatchOptions"), _PATCH_FLAGS, help={
        "lowpass_sigma": "Gaussian low-pass of the patches, sigma in voxels (0: none; about 2 for noisy tomograms, "
                         "where the autoencoder otherwise learns nothing)"}, metavar={"lowpass_sigma": "SIGMA"})


def _encode_args(s: argparse.ArgumentParser, kind: bool = False) -> None:
    g = s.add_argument_group("encoding")
    model = _options("EncodeOptions")
    _model_flags(g, model, {**_KIND_FLAGS, **_ENCODE_FLAGS} if kind else _ENCODE_FLAGS,
                 unset=("codes", "invariant_lowpass"), help={
        "codes": "autoencoder: the trained encoder's codes (default; the published method); invariant: "
                 "rotation-invariant descriptors, no model, blind to a structure's orientation (new tomograms: "
                 "default DIR's kind)",
        "invariant_lowpass": "invariant codes: Gaussian low-pass (sigma, voxels) of the patches they describe "
                             "(default 0: none, the patches are cut again from the tomograms when the stack was "
                             "low-passed; the stack's own sigma: its patches as they are; new tomograms: DIR's)"},
                 metavar={"invariant_lowpass": "SIGMA"})


def _select_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--select", required=True, metavar="SEL",
                   help="a selection YAML file ({surface: [39, 43], globular: [98, 12]}) or the same as text: "
                   "\"surface=39,43 globular=98,12\"")


def _centres(args: argparse.Namespace) -> Any:
    from deepict_dask.mine.options import CentreOptions
    from deepict_dask.options import build

    values = option_values(args, _CENTRE_FLAGS)
    if args.grid is not None:
        values.update(method="grid", stride=args.grid)
    return build(CentreOptions, values, flags={**_CENTRE_FLAGS, "stride": "--grid", "method": "--grid"})


def _patches_opts(args: argparse.Namespace) -> Any:
    from deepict_dask.errors import ConfigError
    from deepict_dask.mine.options import PatchOptions
    from deepict_dask.options import build

    values = option_values(args, _PATCH_FLAGS)
    size = args.patch_shape
    if size is not None:
        if len(size) not in (1, 3):
            raise ConfigError(f"--patch-size: one edge or three (Z Y X), got {len(size)} values")
        values["patch_shape"] = tuple(size * 3 if len(size) == 1 else size)
    return build(PatchOptions, values, flags={**_PATCH_FLAGS, "patch_shape": "--patch-size"})


def _encode_opts(args: argparse.Namespace) -> Any:
    from deepict_dask.mine.options import EncodeOptions
    from deepict_dask.options import build

    flags = {**_KIND_FLAGS, **_ENCODE_FLAGS}
    return build(EncodeOptions, option_values(args, flags), flags=flags)


def _selection(args: argparse.Namespace) -> tuple[dict[str, list[int]], str]:
    """The ``--select`` value: a YAML file when one exists at that path (or it ends in .yaml/.yml), else text."""
    from pathlib import Path

    from deepict_dask.mine.labels import parse_selection_text, read_selection

    text = args.select
    if Path(text).is_file() or text.endswith((".yaml", ".yml")):
        return read_selection(text), text
    return parse_selection_text(text), "--select"


def _client(args: argparse.Namespace) -> Any:
    from deepict_dask.cli.common import spec_from_args
    from deepict_dask.cluster import dask_client

    return dask_client(spec_from_args(args))


# ------------------------------------------------------------------------------------------------- steps


def _patches(args: argparse.Namespace) -> int:
    from deepict_dask.mine import MineLayout
    from deepict_dask.mine.workflow import check_patch_fits, make_patches

    centres, patches = _centres(args), _patches_opts(args)
    layout = MineLayout.at(args.out)
    refuse_existing(layout.patches, layout.patches_table, overwrite=args.overwrite)
    check_patch_fits(args.tomograms, patches.patch_shape)
    with _client(args):
        table = make_patches(args.tomograms, layout, centres, patches)
    per_tomo = ", ".join(f"{t} {n}" for t, n in table["tomo"].value_counts(sort=False).items())
    print(f"{len(table)} patches of {list(patches.patch_shape)} voxels ({centres.method}; {per_tomo}) -> {layout.patches}")
    return 0


def _train_ae(args: argparse.Namespace) -> int:
    from deepict_dask.mine import MineLayout
    from deepict_dask.mine.workflow import require, train_ae
    from deepict_dask.options import build
    from deepict_dask.train.patch_stack import StackTrainOptions

    flags = {**_TRAIN_AE_FLAGS, "augment": "--augment"}
    values = option_values(args, _TRAIN_AE_FLAGS) | ({"augment": args.augment} if args.augment is not None else {})
    arch = {k: v for k, v in (("filters", args.filters), ("code_dim", args.code_dim)) if v is not None}
    opts = build(StackTrainOptions, {**values, "model": arch, "progress": progress_wanted(args)}, flags=flags)
    layout = MineLayout.at(args.dir)
    require(layout, "patches")
    refuse_existing(layout.autoencoder, overwrite=args.overwrite)
    result = train_ae(layout, opts)
    best = result.best or {}
    stop = " (stopped early)" if result.stopped_early else (" (time budget reached)" if result.time_budget_reached else "")
    print(f"trained {result.steps} steps{stop}; best validation loss {best.get('val_loss')}; model: {layout.autoencoder}")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from deepict_dask.errors import ConfigError
    from deepict_dask.mine import MineLayout
    from deepict_dask.mine.encode import autoencoder_info_of
    from deepict_dask.mine.workflow import encode, encode_new, reference_codes, require

    opts = _encode_opts(args)
    layout = MineLayout.at(args.dir)
    if args.tomograms:
        if not args.into:
            raise ConfigError("encoding new tomograms needs --into DIR2 (their patches and codes go there)")
        into = MineLayout.at(args.into)
        if layout.codes.exists():  # comparable with DIR's clusters: its kind, and for invariant codes its low-pass
            ref = reference_codes(layout, opts)
            if args.codes in (None, ref.codes):
                opts = ref
        model = None
        if opts.codes == "autoencoder":
            model = args.model or require(layout, "autoencoder")
            autoencoder_info_of(model)
        centres = _centres(args)
        refuse_existing(into.patches, into.codes, overwrite=args.overwrite)
        with _client(args):
            table = encode_new(args.tomograms, into, model, centres, None, opts, reference=layout,
                               keep_patches=not args.no_patches)
        kept = "no patch stack" if args.no_patches else f"patches {into.patches}"
        print(f"{len(table)} patches of {len(args.tomograms)} tomogram(s) encoded -> {into.codes} ({kept})")
        return 0
    if args.into or args.no_patches:
        raise ConfigError(f"{'--into' if args.into else '--no-patches'} needs new tomograms (TOMO...) to encode")
    require(layout, "patches")
    if opts.codes == "autoencoder":
        autoencoder_info_of(args.model or require(layout, "autoencoder"))
    elif args.model:
        raise ConfigError("--model is for autoencoder codes; invariant codes need no model")
    refuse_existing(layout.codes, overwrite=args.overwrite)
    with _client(args):
        codes = encode(layout, args.model, opts)
    print(f"{codes.shape[0]} patches encoded to {codes.shape[1]} numbers each ({opts.codes}) -> {layout.codes}")
    return 0


def _choose_k(args: argparse.Namespace) -> int:
    from deepict_dask.mine import ChooseKOptions, MineLayout
    from deepict_dask.mine.workflow import choose_k, require
    from deepict_dask.options import build

    values = option_values(args, _CHOOSE_K_FLAGS) | ({"ks": args.ks} if args.ks is not None else {})
    opts = build(ChooseKOptions, values, flags={**_CHOOSE_K_FLAGS, "ks": "--ks"})
    layout = MineLayout.at(args.dir)
    require(layout, "codes")
    refuse_existing(layout.choose_k_table, overwrite=args.overwrite)
    scores = choose_k(layout, opts)
    print(scores[["k", "calinski_harabasz", "gap", "gap_sd"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"-> {layout.choose_k_table} (plot {layout.choose_k_plot.name}); neither index decides k alone: "
          "compare the galleries of a few k")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    import numpy as np

    from deepict_dask.mine import ClusterOptions, MineLayout
    from deepict_dask.mine.workflow import cluster, require
    from deepict_dask.options import build

    opts = build(ClusterOptions, option_values(args, _CLUSTER_FLAGS), flags=_CLUSTER_FLAGS)
    layout = MineLayout.at(args.dir)
    require(layout, "codes")
    refuse_existing(layout.labels, overwrite=args.overwrite)
    labels = cluster(layout, opts)
    sizes = np.bincount(labels, minlength=opts.k)
    print(f"{len(labels)} patches in k = {opts.k} clusters (sizes {int(sizes.min())}..{int(sizes.max())}, "
          f"{int((sizes == 0).sum())} empty) -> {layout.clusters}")
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from deepict_dask.mine import GalleryOptions, MineLayout
    from deepict_dask.mine.workflow import gallery, require
    from deepict_dask.options import build

    opts = build(GalleryOptions, option_values(args, _GALLERY_FLAGS), flags=_GALLERY_FLAGS)
    layout = MineLayout.at(args.dir)
    require(layout, "labels")
    refuse_existing(layout.gallery, overwrite=args.overwrite)
    table = gallery(layout, args.tomograms, opts, args.device)
    print(f"{len(table)} clusters -> {layout.gallery} (table {layout.clusters_table})")
    return 0


def _labels(args: argparse.Namespace) -> int:
    from deepict_dask.mine import MineLayout
    from deepict_dask.mine.workflow import weak_labels
    from deepict_dask.options import build
    from deepict_dask.train.patch_stack import StackTrainOptions

    flags = {"batch_size": "--batch-size", "crop": "--crop", "max_epochs": "--epochs", "patience": "--patience"}
    values = {f: getattr(args, d) for f, d in (("batch_size", "batch_size"), ("crop", "crop"),
                                               ("max_epochs", "epochs"), ("patience", "patience"))
              if getattr(args, d) is not None}
    if args.filters is not None:
        values["model"] = {"filters": args.filters}
    train = build(StackTrainOptions, values, flags=flags)
    selection, source = _selection(args)
    result = weak_labels(MineLayout.at(args.dir), selection, args.out, threshold=args.threshold,
                         polarity=args.polarity, source=source, overwrite=args.overwrite, device=args.device,
                         train_options=train)
    for name in result.classes:
        print(f"{name}: {result.patches_per_class[name]} patches, {100 * result.voxel_fraction[name]:.1f}% of "
              "their voxels labelled")
    print(f"weak labels -> {result.out}; train EDSS3D with: deepict train {result.train_config}")
    return 0


def _filter(args: argparse.Namespace) -> int:
    from deepict_dask.mine import MineLayout
    from deepict_dask.mine.workflow import check_filter, filter_tomograms

    selection, source = _selection(args)
    opts, centres = _encode_opts(args), _centres(args)
    refuse_existing(args.out, overwrite=args.overwrite)
    check_filter(MineLayout.at(args.dir), selection, source)
    with _client(args):
        table = filter_tomograms(MineLayout.at(args.dir), args.tomograms, selection, args.out, centres=centres,
                                 options=opts, into=args.into, source=source, overwrite=args.overwrite)
    counts = ", ".join(f"{c} {int((table['class'] == c).sum())}" for c in selection)
    print(f"{len(table)} patches in the selected clusters ({counts}) -> {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from deepict_dask.mine.config import load_mine_config
    from deepict_dask.mine.workflow import refuse_earlier_run, run_mine

    config = load_mine_config(args.config)
    refuse_earlier_run(config.out, args.overwrite)
    with _client(args):
        table = run_mine(config, overwrite=args.overwrite, progress=progress_wanted(args), say=print)
    print(f"{len(table)} clusters; look at {config.out}/gallery.html, then 'deepict mine labels {config.out} "
          "--select ...'")
    return 0


def _init_config(args: argparse.Namespace) -> int:
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.mine.config import EXAMPLE

    if not args.out:
        print(EXAMPLE, end="")
        return 0
    with atomic_path(args.out, overwrite=args.overwrite) as tmp:
        tmp.write_text(EXAMPLE)
    print(f"wrote {args.out}; edit tomograms and out, then: deepict mine run {args.out}")
    return 0
