"""The mining workflow as Python functions, one per step, each taking its options model.

``find_centres`` -> ``extract_patches`` -> (train the autoencoder) -> ``encode_patches`` ->
``cluster_codes`` -> ``write_gallery``. Every step reads and writes the files that
:class:`~deepict_dask.layout.MineLayout` names under one directory, so steps can run
separately (the CLI) or in one go. Runs on the active Dask scheduler (a ``distributed`` client
when one exists).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.layout import MineLayout
from deepict_dask.mine.options import (
    CentreOptions,
    ChooseKOptions,
    ClusterOptions,
    EncodeOptions,
    GalleryOptions,
    PatchOptions,
)

Paths = Sequence[str | os.PathLike]


def _as_layout(out: str | os.PathLike | MineLayout) -> MineLayout:
    return out if isinstance(out, MineLayout) else MineLayout.at(out)


def _volumes(tomograms: Paths) -> dict:
    from deepict_dask.io import open_volume, tomogram_name

    volumes = {}
    for path in tomograms:
        name = tomogram_name(path)
        if name in volumes:
            raise InputError(f"two input tomograms are both named {name!r}; tables could not tell them apart", path)
        volumes[name] = open_volume(path)
    if not volumes:
        raise InputError("no tomogram given")
    return volumes


def find_centres(tomograms: Paths, options: CentreOptions = CentreOptions(), *,
                 patch_shape: Sequence[int] = (32, 32, 32), out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Patch centres of every tomogram (DoG peaks or a grid), optionally written as a table.

    Parameters
    ----------
    tomograms
        MRC or (OME-)Zarr paths.
    options
        :class:`CentreOptions`.
    patch_shape
        Used by the grid method, so that grid patches fit the tomogram.
    out
        Table path to write (CSV), or ``None``.

    Returns
    -------
    The coordinate table (``tomo``, ``class`` = method, voxels and Angstrom, ``score`` = DoG response).
    """
    from deepict_dask.io.coords import write_table
    from deepict_dask.mine.centres import volume_centres

    tables = [volume_centres(v, name, options, patch_shape) for name, v in _volumes(tomograms).items()]
    table = pd.concat(tables, ignore_index=True)
    if out is not None:
        write_table(table, out)
    return table


def extract_patches(tomograms: Paths, centres: pd.DataFrame | str | os.PathLike,
                    out: str | os.PathLike | MineLayout, options: PatchOptions = PatchOptions()) -> pd.DataFrame:
    """Patch stack ``patches.zarr`` and its table ``patches.csv`` under ``out`` from the centres.

    Parameters
    ----------
    tomograms
        The tomograms the centres' ``tomo`` column names (by file name).
    centres
        A coordinate table or its path.
    out
        The mining directory (or its layout).
    options
        :class:`PatchOptions`.

    Returns
    -------
    The patches table.
    """
    from deepict_dask.io.coords import read_table
    from deepict_dask.mine.patches import write_patch_stack

    layout = _as_layout(out)
    table = centres if isinstance(centres, pd.DataFrame) else read_table(centres)
    stored = write_patch_stack(_volumes(tomograms), table, layout.patches, layout.patches_table, options)
    record_tomograms(layout, tomograms)
    return stored


def record_tomograms(layout: MineLayout, tomograms: Paths) -> None:
    """``tomograms.json``: the inputs' paths (for the gallery's overlays, and to cut the patches again)."""
    import json
    from pathlib import Path

    from deepict_dask.io.atomic import atomic_path

    with atomic_path(layout.tomograms) as tmp:
        tmp.write_text(json.dumps([str(Path(p).resolve()) for p in tomograms], indent=1))


def recorded_tomograms(layout: MineLayout) -> list[str]:
    """The tomograms the patches were cut from (``tomograms.json``) that still exist."""
    import json
    from pathlib import Path

    try:
        paths = json.loads(layout.tomograms.read_text())
    except (OSError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str) and Path(p).exists()]


def described_source(layout: MineLayout, lowpass_sigma: float | None):
    """What invariant codes of ``layout``'s patches describe: the patch stack itself, or, when its low-pass
    differs from ``lowpass_sigma`` (``None``: take the stack as it is), a
    :class:`~deepict_dask.mine.patches.PatchReader` that cuts the same patches from the recorded tomograms
    with that low-pass in each task (nothing more is stored)."""
    from deepict_dask.io.coords import read_table
    from deepict_dask.mine.patches import open_patch_stack, patch_reader, stack_cut

    stack = open_patch_stack(layout.patches)
    cut = stack_cut(stack)
    if lowpass_sigma is None or float(lowpass_sigma) == cut.lowpass_sigma:
        return layout.patches
    from deepict_dask.io import tomogram_name

    names = [str(n) for n in stack.attrs.get("tomograms", [])]
    found = {tomogram_name(p): p for p in recorded_tomograms(layout)}
    missing = [n for n in names if n not in found]
    if missing or not names:
        raise InputError(f"invariant codes with invariant_lowpass {lowpass_sigma} cut the patches again from their "
                         f"tomograms, but {missing or 'they'} are not listed in {layout.tomograms.name} or no longer "
                         f"exist; give the stack's own low-pass ({cut.lowpass_sigma}) to describe "
                         "its patches as they are", layout.patches)
    table = read_table(layout.patches_table)
    opts = cut.model_copy(update={"lowpass_sigma": float(lowpass_sigma)})
    rows, reader = patch_reader(_volumes([found[n] for n in names]), table, opts)
    if len(rows) != int(stack.shape[0]):
        raise InputError(f"{layout.patches_table.name} lists {len(rows)} patches, the stack holds {stack.shape[0]}",
                         layout.patches_table)
    return reader


def encode_patches(out: str | os.PathLike | MineLayout, model: str | os.PathLike | None = None,
                   options: EncodeOptions = EncodeOptions(), scaling: tuple[np.ndarray, np.ndarray] | None = None):
    """Encode ``patches.zarr`` into ``codes.zarr``.

    With ``options.codes = "autoencoder"`` (the published method): the autoencoder ``model``
    (default ``models/ae.safetensors``). With ``"invariant"``: rotation-invariant descriptors, no model,
    of the patches cut with ``options.invariant_lowpass`` (:func:`described_source`), z-scored with
    ``scaling`` (another directory's :func:`~deepict_dask.mine.encode.invariant_scaling`, to assign
    these patches to its clusters) or with these patches' own statistics.

    Returns
    -------
    The written codes array ``(N, code_dim)``, opened read-only (Zarr: read slices of it as needed).
    """
    from deepict_dask.mine.encode import write_codes, write_invariant_codes

    layout = _as_layout(out)
    if options.codes == "invariant":
        write_invariant_codes(described_source(layout, options.invariant_lowpass), layout.codes, options, scaling)
    else:
        write_codes(layout.patches, model or layout.autoencoder, layout.codes, options)
    return _codes(layout)


def _codes(layout: MineLayout):
    import zarr

    if not layout.codes.exists():
        raise InputError("no codes yet: encode the patches first", layout.codes)
    return zarr.open_array(str(layout.codes), mode="r")


def cluster_codes(out: str | os.PathLike | MineLayout, options: ClusterOptions = ClusterOptions()) -> np.ndarray:
    """k-means of ``codes.zarr``: ``clusters/labels.zarr`` and ``clusters/centres.json``; returns the labels."""
    from deepict_dask.mine.kmeans import write_clusters

    layout = _as_layout(out)
    labels, _centres = write_clusters(_codes(layout), options, layout.labels, layout.cluster_centres)
    return labels


def score_k(out: str | os.PathLike | MineLayout, options: ChooseKOptions = ChooseKOptions()) -> pd.DataFrame:
    """Calinski-Harabasz and gap statistic per k (``clusters/choose_k.csv`` and ``.png``); neither decides alone."""
    from deepict_dask.mine.kmeans import write_choose_k

    layout = _as_layout(out)
    return write_choose_k(_codes(layout), options, layout.choose_k_table, layout.choose_k_plot)


def write_gallery(out: str | os.PathLike | MineLayout, tomograms: Paths = (), model: str | os.PathLike | None = None,
                  options: GalleryOptions = GalleryOptions(), device: str = "auto") -> pd.DataFrame:
    """``gallery.html`` and ``clusters/clusters.csv`` from the clusters, patches and codes.

    Autoencoder codes: each cluster centre decoded by ``model`` (default: ``out``'s autoencoder).
    Invariant codes have no decoder: each cluster shows its most typical patch instead (the one
    closest to its centre). ``tomograms`` (optional) give the orthoslice overlays. Returns the clusters table.
    """
    import zarr

    from deepict_dask.io.coords import read_table
    from deepict_dask.mine import gallery
    from deepict_dask.mine.encode import codes_kind, decode_codes
    from deepict_dask.mine.kmeans import nearest_members, read_centres
    from deepict_dask.mine.patches import open_patch_stack

    layout = _as_layout(out)
    if not layout.labels.exists():
        raise InputError("no clusters yet: cluster the codes first", layout.labels)
    labels = np.asarray(zarr.open_array(str(layout.labels), mode="r")[:])
    centres = read_centres(layout.cluster_centres)
    stack = open_patch_stack(layout.patches)
    if codes_kind(layout.codes) == "invariant":
        members = nearest_members(_codes(layout), centres, labels)
        shown = np.zeros((len(centres), *stack.shape[1:]), np.float32)
        filled = np.flatnonzero(members >= 0)
        shown[filled] = stack.get_orthogonal_selection((members[filled],))  # one read of k patches
        decoded = None
    else:
        decoded = decode_codes(model or layout.autoencoder, centres, device)
        shown = None
    return gallery.write_gallery(layout.gallery, layout.clusters_table, decoded=decoded, typical=shown,
                                 stack=stack, labels=labels, patches=read_table(layout.patches_table),
                                 volumes=_volumes(tomograms) if tomograms else {}, opts=options)
