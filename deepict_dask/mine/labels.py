"""Weak labels: the clusters a user picked, turned into voxel labels for EDSS3D.

The user names which k-means clusters form which class, in a small YAML file (``surface: [39, 43]``,
``globular: [98, 12]``) or as an option string (``surface=39,43 globular=98,12``). Every patch of a
selected cluster gets voxel labels from its *decoded* image (the autoencoder's reconstruction, which
is smooth where the raw patch is noise): min-max scaled to [0, 1], voxels on the object's side of
``threshold`` (0.5) are the class, the others background.

The reserved name ``background`` selects negative examples: clusters of plain ice, carbon or anything
the network should learn to leave unlabelled (``background: [7, 55]``); their patches join the training
set with every voxel background. Without them EDSS3D only ever sees patches that hold an object, and
tends to mark structure everywhere (an improvement on the published method, which has none).

Polarity: the published rule takes voxels <= 0.5 as the class, i.e. *dark* objects. That is the
convention of cryo-ET reconstructions, where protein and membranes are darker than the ice, and of
:mod:`deepict_dask.simulate`, whose tomograms are ``-(CTF * density)``: after z-scoring, particles
and membranes have negative mean values. ``polarity="bright"`` (voxels > threshold are the class)
is for inverted tomograms.

Output (one directory, written under a temporary name and renamed when complete)::

    patches.zarr   the selected patches (N_sel, Z, Y, X) float32, chunked along N
    labels.zarr    their labels (N_sel, Z, Y, X) uint8: 0 background, k = the k-th class (background
                   clusters: all 0)
    classes.json   classes, class ids, the selection, threshold, polarity, the source patch indices

which :func:`deepict_dask.train.train_edss3d` takes as it is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.io.atomic import atomic_path

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
BATCH = 256  # patches decoded and written at a time (bounded memory whatever the selection's size)

Selection = dict[str, list[int]]
BACKGROUND = "background"  # the selection entry of negative examples (every voxel background)


def read_selection(path: str | os.PathLike) -> Selection:
    """Read a selection YAML file ``{class: [cluster ids]}`` (safe loader: nothing in it is executed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("selection file not found", path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid YAML: {str(exc).splitlines()[0]}", path) from exc
    return parse_selection(data, path)


def parse_selection_text(text: str, source: str = "--select") -> Selection:
    """``"surface=39,43 globular=98,12"`` (``:`` instead of ``=`` and ``;`` between classes also work)."""
    out: dict[str, Any] = {}
    for item in filter(None, re.split(r"[\s;]+", text.strip())):
        name, sep, ids = item.partition("=") if "=" in item else item.partition(":")
        if not sep:
            raise ConfigError(f"{item!r} is not CLASS=ID,ID,... (e.g. surface=39,43 globular=98,12)", source)
        try:
            values = [int(v) for v in ids.split(",") if v]
        except ValueError:
            raise ConfigError(f"cluster ids of class {name!r} must be integers, got {ids!r}", source) from None
        if name in out:
            raise ConfigError(f"class {name!r} is given twice", source)
        out[name] = values
    return parse_selection(out, source)


def parse_selection(data: Any, source: str | os.PathLike | None = None) -> Selection:
    """Check the form of a selection mapping: class names, lists of distinct integer ids, no cluster twice."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("the selection is empty: name at least one class and its clusters, "
                          "e.g. {surface: [39, 43]}", source)
    out: Selection = {}
    owner: dict[int, str] = {}
    for name, ids in data.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or (name.lower() == BACKGROUND and name != BACKGROUND):
            raise ConfigError(f"bad class name {name!r}: a letter, then letters, digits, _ or -; "
                              f"'{BACKGROUND}' (lower case) names the negative examples", source)
        if isinstance(ids, int) and not isinstance(ids, bool):
            ids = [ids]
        if not isinstance(ids, list) or not ids:
            raise ConfigError(f"class {name!r} needs a non-empty list of cluster ids", source)
        for c in ids:
            if not isinstance(c, int) or isinstance(c, bool) or c < 0:
                raise ConfigError(f"class {name!r}: cluster ids are integers >= 0, got {c!r}", source)
            if c in owner:
                where = "twice" if owner[c] == name else f"in two classes ({owner[c]!r} and {name!r})"
                raise ConfigError(f"cluster {c} is selected {where}", source)
            owner[c] = name
        out[name] = list(ids)
    if not set(out) - {BACKGROUND}:
        raise ConfigError("the selection names only background clusters: name at least one class and its clusters, "
                          "e.g. {surface: [39, 43]}", source)
    return out


def check_selection(selection: Selection, cluster_labels: np.ndarray, k: int | None = None,
                    source: str | os.PathLike | None = None) -> None:
    """Every selected cluster exists (``0..k-1``) and has patches; one error line naming ``source``."""
    counts = np.bincount(np.asarray(cluster_labels, np.int64), minlength=k or 0)
    for name, ids in selection.items():
        for c in ids:
            if k is not None and c >= k:
                raise ConfigError(f"class {name!r}: cluster {c} does not exist (k = {k}: ids 0..{k - 1})", source)
            if c >= len(counts) or counts[c] == 0:
                raise ConfigError(f"class {name!r}: cluster {c} has no patches", source)


def weak_masks(decoded: np.ndarray, threshold: float = 0.5,
               polarity: Literal["dark", "bright"] = "dark") -> np.ndarray:
    """Object masks (N, Z, Y, X) bool of decoded patches: each min-max scaled to [0, 1], then ``<= threshold``
    (dark objects, the published rule) or ``> threshold`` (bright). A constant image has no object."""
    d = np.asarray(decoded, np.float32)
    axes = tuple(range(1, d.ndim))
    lo, hi = d.min(axis=axes, keepdims=True), d.max(axis=axes, keepdims=True)
    span = hi - lo
    scaled = (d - lo) / np.where(span > 0, span, 1)
    mask = scaled <= threshold if polarity == "dark" else scaled > threshold
    return mask & (span > 0)


@dataclass
class WeakLabels:
    """Where the weak labels went and what they hold."""

    out: Path
    patches: Path
    labels: Path
    classes: list[str]
    patches_per_class: dict[str, int] = field(default_factory=dict)
    voxel_fraction: dict[str, float] = field(default_factory=dict)


def _rows(arr: Any, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (sorted) of a numpy, Zarr or Dask array."""
    if isinstance(arr, np.ndarray):
        return arr[idx]
    if hasattr(arr, "get_orthogonal_selection"):
        return np.asarray(arr.get_orthogonal_selection((idx,)))
    rows = arr[idx]
    return np.asarray(rows.compute() if hasattr(rows, "compute") else rows)


def _open(patches: Any) -> Any:
    if isinstance(patches, (str, os.PathLike)):
        from deepict_dask.train.patch_stack import open_stack_array

        return open_stack_array(patches, "patch stack")
    return patches


def write_weak_labels(patches: Any, decoded: Any | Callable[[np.ndarray], np.ndarray], cluster_labels: Sequence[int],
                      selection: Selection, out: str | os.PathLike, *, k: int | None = None, threshold: float = 0.5,
                      polarity: Literal["dark", "bright"] = "dark", source: str | os.PathLike | None = None,
                      overwrite: bool = False, voxel_size: float | None = None) -> WeakLabels:
    """Label the patches of the selected clusters and write them, with their labels, as an EDSS3D training set.

    Parameters
    ----------
    patches
        The patch stack (N, Z, Y, X): a Zarr path, a Zarr array or a numpy array.
    decoded
        The decoded images of the same N patches (an array of that shape, read only where selected), or a
        function mapping a batch of patches (n, Z, Y, X) to their decoded images (e.g. the autoencoder).
    cluster_labels
        The cluster of every patch (N integers, from k-means).
    selection
        ``{class: [cluster ids]}`` (:func:`read_selection`, :func:`parse_selection_text`).
    out
        Output directory (``patches.zarr``, ``labels.zarr``, ``classes.json``), written atomically.
    k
        Number of clusters (ids must be below it); default: only clusters with patches count.
    threshold, polarity
        Voxels of the min-max scaled decoded image ``<= threshold`` (``dark``) or ``> threshold`` (``bright``)
        are the class.
    source
        The selection's file or option, named in errors.
    overwrite
        Replace an existing ``out``.
    voxel_size
        Recorded on ``patches.zarr`` (Å); default: the patch stack's ``voxel_size`` attribute.

    Returns
    -------
    WeakLabels
        Paths, classes, the number of patches per class and their labelled voxel fraction.
    """
    import zarr

    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
    if polarity not in ("dark", "bright"):
        raise ConfigError(f"polarity must be 'dark' or 'bright', got {polarity!r}")
    selection = parse_selection(selection, source)
    stack = _open(patches)
    labels_of = np.asarray(cluster_labels, np.int64).ravel()
    if stack.ndim != 4 or len(labels_of) != stack.shape[0]:
        raise InputError(f"{len(labels_of)} cluster labels for a patch stack of shape {tuple(stack.shape)}",
                         patches if isinstance(patches, (str, os.PathLike)) else None)
    if not callable(decoded) and tuple(decoded.shape) != tuple(stack.shape):
        raise InputError(f"decoded images have shape {tuple(decoded.shape)}, the patches {tuple(stack.shape)}")
    check_selection(selection, labels_of, k, source)
    classes = [name for name in selection if name != BACKGROUND]
    class_of_cluster = {c: i + 1 for i, name in enumerate(classes) for c in selection[name]}
    class_of_cluster.update({c: 0 for c in selection.get(BACKGROUND, [])})
    chosen = np.flatnonzero(np.isin(labels_of, list(class_of_cluster)))
    ids = np.array([class_of_cluster[int(c)] for c in labels_of[chosen]], np.uint8)
    shape = (len(chosen),) + tuple(int(s) for s in stack.shape[1:])
    chunks = (min(64, len(chosen)),) + shape[1:]
    voxels = np.zeros(len(classes) + 1, np.int64)
    out = Path(out)
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        pz = zarr.create_array(str(tmp / "patches.zarr"), shape=shape, dtype="float32", chunks=chunks)
        lz = zarr.create_array(str(tmp / "labels.zarr"), shape=shape, dtype="uint8", chunks=chunks)
        vs = voxel_size if voxel_size is not None else (stack.attrs.get("voxel_size") if hasattr(stack, "attrs") else None)
        if vs is not None:
            pz.attrs["voxel_size"] = vs
        for a in range(0, len(chosen), BATCH):
            idx = chosen[a:a + BATCH]
            img = _rows(stack, idx).astype(np.float32, copy=False)
            dec = decoded(img) if callable(decoded) else _rows(decoded, idx)
            mask = weak_masks(np.asarray(dec), threshold, polarity)
            lab = np.where(mask, ids[a:a + BATCH, None, None, None], 0).astype(np.uint8)
            pz[a:a + len(idx)] = img
            lz[a:a + len(idx)] = lab
            voxels += np.bincount(lab.ravel(), minlength=len(classes) + 1)
        per_class = {name: int((ids == i + 1).sum()) for i, name in enumerate(classes)}
        frac = {name: round(float(voxels[i + 1]) / max(1, per_class[name] * int(np.prod(shape[1:]))), 4)
                for i, name in enumerate(classes)}
        meta = {"classes": classes, "class_ids": {name: i + 1 for i, name in enumerate(classes)},
                "selection": selection, "threshold": threshold, "polarity": polarity,
                "patches_per_class": per_class, "voxel_fraction": frac,
                "background_patches": int((ids == 0).sum()),
                "source_patches": str(patches) if isinstance(patches, (str, os.PathLike)) else None,
                "patch_index": chosen.tolist()}
        (tmp / "classes.json").write_text(json.dumps(meta, indent=2))
    return WeakLabels(out, out / "patches.zarr", out / "labels.zarr", classes, per_class, frac)
