"""``pick``: probability map -> filtered clusters -> coordinate table (+ label images, summary).

The Python API behind ``deepict pick``. Inputs are a ``deepict predict`` prediction group
(``<tomo>.ome.zarr``, group ``predictions/<model>``, channels named after the classes), or any
probability map as MRC or Zarr. Work runs on the current Dask scheduler in one pass over the map
(plus a second one for label images, only when asked for).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume, origin_of, spatial_shape, voxel_size_of
from deepict_dask.pick import context as ctxmod
from deepict_dask.pick import filters, label, stats, tables
from deepict_dask.pick.threshold import check_threshold, check_value_range, probability_scale

log = logging.getLogger(__name__)

DEFAULT_CONNECTIVITY = 26


@dataclass
class PickResult:
    """The picked table (project schema), per-class summary, all clusters before filtering (per class
    unit, with a ``kept`` column), and lazy label images of the kept clusters (when asked for)."""

    table: pd.DataFrame
    summary: dict[str, Any]
    clusters: dict[str, pd.DataFrame] = field(default_factory=dict)
    labels: dict[str, xr.DataArray] = field(default_factory=dict)
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shape: tuple[int, int, int] = (0, 0, 0)


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------


def open_map(path: str | os.PathLike, *, group: str | None = None, chunks: Any = None) -> xr.DataArray:
    """Open a probability map: MRC, Zarr array, OME-Zarr image, or a tomogram store holding one
    ``predictions/<model>`` group (several: name one with ``group``)."""
    from deepict_dask.io import is_zarr_path, open_volume
    from deepict_dask.layout import TomoStore

    p = Path(path)
    models = TomoStore(p).models() if group is None and is_zarr_path(p) else []
    if models:
        if len(models) == 1:
            group = TomoStore.prediction_group(models[0])
        elif models:
            raise InputError(f"holds predictions of several models ({', '.join(models)}); choose one with "
                             "--group predictions/<model>", p)
    return open_volume(p, chunks, group=group)


def parse_length(value: float | str | None, voxel_size: Sequence[float], default_unit: str) -> float | None:
    """A length in Angstrom from ``12`` (``default_unit``), ``'12'``, ``'12A'``/``'12Å'`` or ``'12vx'``.

    Voxels convert with the x voxel size (tomograms are isotropic in practice)."""
    if value is None:
        return None
    unit = default_unit
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(a|å|angstrom|vx|vox|voxels?)?\s*", value, re.I)
        if not m:
            raise InputError(f"cannot read the length {value!r}; write e.g. 40A (Angstrom) or 4vx (voxels)")
        number = float(m.group(1))
        if m.group(2):
            unit = "A" if m.group(2).lower() in ("a", "å", "angstrom") else "vx"
    else:
        number = float(value)
    if not number >= 0:
        raise InputError(f"a length must not be negative, got {value!r}")
    return number if unit == "A" else number * float(voxel_size[2])


def _map_layout(vol: xr.DataArray, classes: Sequence[str] | None) -> tuple[list[tuple[str, tuple[int, ...]]], bool, int | None, list[str]]:
    """(pick units [(name, channels)], softmax, background channel, class names of the channels)."""
    source = vol.attrs.get("source")
    pred = vol.attrs.get("prediction") if isinstance(vol.attrs.get("prediction"), dict) else {}
    if vol.ndim == 3:
        name = (list(classes)[0] if classes else None) or pred.get("classes", [None])[0] or "particle"
        if classes and len(classes) > 1:
            raise InputError(f"a single-channel map holds one class; got --class {', '.join(classes)}", source)
        return [(str(name), ())], False, None, [str(name)]
    names = [str(c) for c in vol["c"].values]
    softmax = pred.get("activation") == "softmax" or vol.attrs.get("activation") == "softmax" or "background" in names
    background = names.index("background") if "background" in names else None
    class_names = [n for n in names if n != "background"]
    if classes:
        unknown = [c for c in classes if c not in class_names]
        if unknown:
            raise InputError(f"the map has no class {', '.join(map(repr, unknown))}; it has {', '.join(class_names)}", source)
    if softmax:
        return [("+".join(classes) if classes else "all", tuple(names.index(c) for c in class_names))], True, background, class_names
    chosen = list(classes) if classes else class_names
    return [(c, (names.index(c),)) for c in chosen], False, None, class_names


def _tomo_name(vol: xr.DataArray, tomo: str | None) -> str:
    if tomo:
        return tomo
    src = str(vol.attrs.get("source") or vol.name or "tomogram")
    from deepict_dask.io import tomogram_name
    from deepict_dask.layout import TomoStore

    return tomogram_name(TomoStore.of_group(src))


# ----------------------------------------------------------------------------------------------
# pick
# ----------------------------------------------------------------------------------------------


def pick(
    prob: xr.DataArray | str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    threshold: float = 0.5,
    min_size: int | None = None,
    max_size: int | None = None,
    radius: float | str | None = None,
    connectivity: int = DEFAULT_CONNECTIVITY,
    cluster: str = "cc",
    cluster_params: dict[str, Any] | None = None,
    context: xr.DataArray | str | os.PathLike | None = None,
    context_group: str | None = None,
    context_mode: str | None = None,
    context_inverse: bool = False,
    context_distance: float | str | None = None,
    distance_reach: float | str | None = None,
    weighted: bool = False,
    duplicate_radius: float | str | Sequence[float] | None = None,
    chunks: Any = None,
    group: str | None = None,
    tomo: str | None = None,
    labels: bool = False,
    centerline: bool = False,
    spacing: float | str = "40A",
) -> PickResult:
    """Threshold, cluster (``cluster``: a name in :data:`label.METHODS`), measure, filter, tabulate.

    Sizes are voxel counts, both bounds inclusive (or from ``radius``, an expected particle radius,
    see :func:`filters.size_range_from_radius`). Lengths (``radius``, ``context_distance``,
    ``distance_reach``, ``duplicate_radius``) are numbers in voxels or strings like ``'40A'``;
    ``duplicate_radius`` may be a (z, y, x) triple in Angstrom (ellipsoid). ``context_mode`` is
    ``intersection``, ``contact`` or ``colocalization`` (``context_inverse`` excludes instead).
    ``centerline`` replaces centroids by points every ``spacing`` (default Angstrom) along each kept
    cluster's skeleton. ``labels`` returns lazy label images of the kept clusters.
    """
    from deepict_dask.io.progress import compute

    vol = open_map(prob, group=group, chunks=chunks) if not isinstance(prob, xr.DataArray) else prob
    source = vol.attrs.get("source")
    if chunks is not None and isinstance(prob, xr.DataArray):
        vol = vol.chunk({d: chunks for d in ("z", "y", "x")} if isinstance(chunks, int) else chunks)
    vs, origin = voxel_size_of(vol), origin_of(vol)
    threshold = check_threshold(threshold)
    connectivity = label.check_connectivity(connectivity)
    from deepict_dask.pick.methods import available_methods

    if cluster not in available_methods():
        raise InputError(f"unknown --cluster {cluster!r}; choose one of {', '.join(sorted(label.METHODS))}")
    method = label.METHODS[cluster]
    params = dict(cluster_params or {})
    if cluster in ("watershed", "peaks") and radius is not None:
        params.setdefault("radius", radius)  # default --min-distance: the expected particle radius
    units, softmax, background, class_names = _map_layout(vol, classes)
    if radius is not None and min_size is None and max_size is None:
        min_size, max_size = filters.size_range_from_radius(parse_length(radius, vs, "vx"), vs)
    min_size, max_size = filters.check_size_range(min_size, max_size)
    context_mode = ctxmod.check_mode(context_mode)
    mask = None
    if context is not None:
        mvol = open_map(context, group=context_group, chunks=chunks) if not isinstance(context, xr.DataArray) else context
        mask = ctxmod.binary_mask(mvol, vol, mvol.attrs.get("source"))
        context_mode = context_mode or "contact"
    elif context_mode is not None:
        raise InputError(f"--context-mode {context_mode} needs a context mask (--context)")
    context_distance_A = parse_length(context_distance, vs, "vx")
    if context_mode == "colocalization" and context_distance_A is None:
        raise InputError("--context-mode colocalization needs --context-distance")
    reach_A = parse_length(distance_reach, vs, "vx") or max(context_distance_A or 0.0, 20 * float(vs[2]))
    if duplicate_radius is not None and not isinstance(duplicate_radius, (str, int, float)):
        dup = tuple(float(r) for r in duplicate_radius)
    else:
        dup = parse_length(duplicate_radius, vs, "vx")
    mask_mode = None
    if mask is not None:
        mask_mode = {"intersection": "multiply_inverse" if context_inverse else "multiply", "contact": "count"}.get(
            context_mode, "count")
    scale = probability_scale(vol.dtype, vol.attrs)

    # one graph for all class units: the map is read once
    passes, states = [], []
    for unit_name, channels in units:
        spec = label.BlockSpec(threshold=threshold, scale=scale, connectivity=connectivity, channels=channels,
                               softmax=softmax, background=background, mask_mode=mask_mode)
        uparams = {**params, "unit": unit_name, "vote_names": class_names if softmax else None}
        state = method.prepare(vol.data, mask, spec, uparams, vs) if method.prepare else None
        states.append(state)
        passes.append(label.build_pass(vol.data, mask, method, spec, uparams, state, vs))
    computed = compute(*[(p[1], p[2]) for p in passes])
    vmin = min((part["vmin"] for parts, _ in computed for part in parts), default=0.0)
    vmax = max((part["vmax"] for parts, _ in computed for part in parts), default=0.0)
    check_value_range(vmin, vmax, any(part["nan"] for parts, _ in computed for part in parts), source)

    tomo_name = _tomo_name(vol, tomo)
    frames, all_clusters, label_images = [], {}, {}
    n_before = {c: 0 for c in ((classes or class_names) if softmax else [u for u, _ in units])}
    for (unit_name, _), (ids, _, _, contexts), (parts, pairs), state in zip(units, passes, computed, states):
        clusters, luts = stats.merge_partials(parts, pairs)
        if softmax:
            votes = clusters[[c for c in clusters.columns if c.startswith("votes_")]].to_numpy()
            best = votes.argmax(axis=1) if len(votes) else np.zeros(0, int)
            clusters["class"] = np.asarray(class_names, dtype=object)[best] if len(best) else []
            clusters["class_fraction"] = votes.max(axis=1) / np.maximum(clusters["size"].to_numpy(), 1) if len(votes) else []
        else:
            clusters["class"] = unit_name
        for cls, n in clusters["class"].value_counts().items():
            n_before[cls] = n_before.get(cls, 0) + int(n)
        keep = filters.size_mask(clusters["size"].to_numpy(), min_size, max_size)
        if softmax and classes:
            keep &= clusters["class"].isin(list(classes)).to_numpy()
        extra = []
        if mask is not None:
            clusters["context_voxels"] = clusters["in_mask"]
            zyx = clusters[["wz", "wy", "wx"] if weighted else ["z", "y", "x"]].to_numpy()
            clusters["context_distance_A"] = np.full(len(clusters), np.nan)
            if keep.any():
                clusters.loc[keep, "context_distance_A"] = ctxmod.distance_to_region(mask, zyx[keep], vs, reach_A)
            keep &= ctxmod.keep_by_context(context_mode, context_inverse, clusters["in_mask"].to_numpy(),
                                           clusters["context_distance_A"].to_numpy(), context_distance_A)
            extra += ["context_distance_A"] + (["context_voxels"] if mask_mode == "count" else [])
        if dup is not None and keep.any():
            idx = np.flatnonzero(keep)
            zyx = clusters.loc[keep, ["wz", "wy", "wx"] if weighted else ["z", "y", "x"]].to_numpy() * np.asarray(vs)
            keep[idx[~filters.remove_duplicates(zyx, clusters.loc[keep, "mean_prob"].to_numpy(), dup)]] = False
        if softmax:
            extra.append("class_fraction")
        clusters["kept"] = keep
        # survivors are renumbered 1..n in raster order; the label image uses the same numbers
        new = np.zeros(len(clusters) + 1, np.int64)
        new[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        clusters["pick_label"] = new[1:]
        all_clusters[unit_name] = clusters
        kept = clusters.loc[keep].copy()
        kept["label"] = kept["pick_label"]
        if not centerline:
            frames.append(tables.pick_table(kept, tomo=tomo_name, cls=kept["class"].tolist(), voxel_size=vs,
                                            origin=origin, weighted=weighted, extra=extra))
        if labels or centerline:
            blut = {b: np.concatenate([[0], new[lut]]) for b, lut in zip(ids, luts)}
            img = label.label_image(vol.data, mask, method, contexts, blut, int(keep.sum()), state)
            label_images[unit_name] = make_volume(img, vs, origin, name=unit_name,
                                                  attrs={"source": source, "pick": {"threshold": threshold, "class": unit_name}})
    if centerline:
        from deepict_dask.pick.centerline import centerline_table

        spacing_A = parse_length(spacing, vs, "A")
        if not spacing_A or spacing_A <= 0:
            raise InputError(f"--spacing must be positive, got {spacing!r}")
        for unit_name, _ in units:
            kept = all_clusters[unit_name].loc[all_clusters[unit_name]["kept"]].copy()
            kept["label"] = kept["pick_label"]
            frames.append(centerline_table(label_images[unit_name].data, kept, voxel_size=vs, origin=origin,
                                           spacing_A=spacing_A, tomo=tomo_name))
        if not labels:
            label_images = {}
    nonempty = [f for f in frames if not f.empty]
    table = pd.concat(nonempty, ignore_index=True) if nonempty else frames[0]
    summary = tables.summary(table, n_before)
    return PickResult(table=table, summary=summary, clusters=all_clusters, labels=label_images, voxel_size=vs,
                      shape=spatial_shape(vol))


def write_outputs(result: PickResult, out: str | os.PathLike, *, labels_out: str | os.PathLike | None = None,
                  summary_out: str | os.PathLike | None = None, overwrite: bool = True) -> Path:
    """Write label images (``labels_out``: OME-Zarr store, groups ``labels/<class>``), the summary JSON
    and the table (last, so a finished table means a finished pick). Each output is atomic."""
    import json

    from deepict_dask.io import write_ome_zarr
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.io.coords import table_format, write_table
    from deepict_dask.layout import TomoStore

    table_format(out)  # a bad suffix fails before any work is written
    if labels_out is not None:
        for name, img in result.labels.items():
            safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
            write_ome_zarr(img, labels_out, group=TomoStore.label_group(safe), label=True, levels=1,
                           chunks=max(img.data.chunksize), overwrite=overwrite)
    if summary_out is not None:
        with atomic_path(summary_out, overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps(result.summary, indent=1), encoding="utf-8")
    return write_table(result.table, out, voxel_size=result.voxel_size, shape=result.shape, overwrite=overwrite)



# ----------------------------------------------------------------------------------------------
# defaults tuned for the model (``deepict evaluate sweep --write-model``)
# ----------------------------------------------------------------------------------------------

BUILTIN = {"threshold": 0.5, "min_size": None, "cluster": "cc", "min_distance": None}


def tuned_settings(vol: xr.DataArray) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Per class, the picking settings tuned for the model that made this prediction, and its file.

    The model file is the one ``deepict predict`` recorded; its entries count only while it holds
    the same network (its hash, or the hash it was tuned from, is the prediction's).
    """
    from deepict_dask.io.checksum import file_sha256
    from deepict_dask.models.spec import read_model_info

    pred = vol.attrs.get("prediction")
    path = Path(pred["model_path"]) if isinstance(pred, dict) and pred.get("model_path") else None
    if path is None or not path.is_file():
        return {}, None
    try:
        picking = read_model_info(path).picking
    except InputError as exc:
        log.warning("no tuned settings: %s", exc)
        return {}, None
    if not picking:
        return {}, path
    sha = {pred.get("model_sha256"), None} - {None}
    current = file_sha256(path)
    same = {c: e for c, e in picking.items() if sha & {current, e.get("validated_sha256")}}
    if len(same) < len(picking):
        log.warning("%s changed since this prediction was made: its tuned settings are not used", path)
    return same, path


def explicit_settings(explicit: dict[str, Any]) -> dict[str, Any]:
    """The user's settings, the built-in defaults where none was given."""
    return {k: explicit.get(k) if explicit.get(k) is not None else v for k, v in BUILTIN.items()}


def plan_picks(class_names: Sequence[str], tuned: dict[str, dict[str, Any]], explicit: dict[str, Any],
               ) -> tuple[list[tuple[list[str], dict[str, Any]]], dict[str, dict[str, str]]]:
    """Group classes by the settings they get: explicit options, else the model's tuned ones, else built in.

    ``explicit`` holds the user's ``threshold``, ``min_size``, ``cluster``, ``min_distance`` (None: not
    given) and ``sizes_given`` (min/max size or radius: the size filter is the user's). Returns the
    groups ``[(classes, settings)]`` and, per class, the settings taken from the model (for the user).
    """
    groups: list[tuple[list[str], dict[str, Any]]] = []
    notes: dict[str, dict[str, str]] = {}
    for cls in class_names:
        entry = tuned.get(cls, {})
        settings = explicit_settings(explicit)
        note: dict[str, str] = {}
        if explicit.get("threshold") is None and "threshold" in entry:
            settings["threshold"], note["threshold"] = float(entry["threshold"]), f"{entry['threshold']:g}"
        if not explicit.get("sizes_given") and "min_size" in entry:
            settings["min_size"], note["min size"] = int(entry["min_size"]), str(entry["min_size"])
        if explicit.get("cluster") is None and "method" in entry:
            settings["cluster"], note["method"] = entry["method"], str(entry["method"])
        if (explicit.get("min_distance") is None and entry.get("method") == settings["cluster"]
                and entry.get("min_distance_A") is not None):
            settings["min_distance"] = f"{entry['min_distance_A']}A"
            note["min distance"] = f"{entry['min_distance_A']:g} A"
        if note:
            notes[cls] = note
        same = next((classes for classes, s in groups if s == settings), None)
        if same is not None:
            same.append(cls)
        else:
            groups.append(([cls], settings))
    return groups, notes


def merge_results(results: Sequence[PickResult]) -> PickResult:
    """One result from picks of disjoint class groups of the same map."""
    first = results[0]
    if len(results) == 1:
        return first
    nonempty = [r.table for r in results if not r.table.empty]
    table = pd.concat(nonempty, ignore_index=True) if nonempty else first.table
    merged = PickResult(table=table, summary={}, voxel_size=first.voxel_size, shape=first.shape)
    for r in results:
        merged.summary.update(r.summary)
        merged.clusters.update(r.clusters)
        merged.labels.update(r.labels)
    return merged


def map_classes(vol: xr.DataArray) -> list[str]:
    """The class names of a probability map's channels (background left out)."""
    return _map_layout(vol, None)[3]
