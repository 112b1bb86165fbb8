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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume, origin_of, spatial_shape, voxel_size_of
from deepict_dask.options import build
from deepict_dask.pick import context as ctxmod
from deepict_dask.pick import filters, label, stats, tables
from deepict_dask.pick.methods import METHODS, get_method
from deepict_dask.pick.options import ContextRule, PickOptions
from deepict_dask.pick.threshold import check_value_range, probability_scale
from deepict_dask.units import Length

log = logging.getLogger(__name__)


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
    ``predictions/<model>`` group (several: name one with ``group``).

    Parameters
    ----------
    path : path
        The map's file or store.
    group : str, optional
        The group inside a Zarr store (e.g. ``predictions/<model>``).
    chunks : optional
        Dask chunks, as for :func:`~deepict_dask.io.open_volume`.

    Returns
    -------
    DataArray
        The lazy map, ZYX or CZYX (channels named after the classes).
    """
    from deepict_dask.io import is_zarr_path, open_volume
    from deepict_dask.layout import TomoStore

    p = Path(path)
    models = TomoStore(p).models() if group is None and is_zarr_path(p) else []
    if models:
        if len(models) == 1:
            group = TomoStore.prediction_group(models[0])
        elif models:
            raise InputError(f"holds predictions of several models ({', '.join(models)}); choose one "
                             "(group: predictions/<model>)", p)
    return open_volume(p, chunks, group=group)


def _map_layout(vol: xr.DataArray, classes: Sequence[str] | None) -> tuple[list[tuple[str, tuple[int, ...]]], bool, int | None, list[str]]:
    """(pick units [(name, channels)], softmax, background channel, class names of the channels)."""
    source = vol.attrs.get("source")
    pred = vol.attrs.get("prediction") if isinstance(vol.attrs.get("prediction"), dict) else {}
    if vol.ndim == 3:
        name = (list(classes)[0] if classes else None) or pred.get("classes", [None])[0] or "particle"
        if classes and len(classes) > 1:
            raise InputError(f"a single-channel map holds one class; got classes {', '.join(classes)}", source)
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
    options: PickOptions | None = None,
    *,
    classes: Sequence[str] | None = None,
    tomo: str | None = None,
    labels: bool = False,
    chunks: Any = None,
    group: str | None = None,
    context_map: xr.DataArray | None = None,
) -> PickResult:
    """Threshold, cluster, measure, filter and tabulate a probability map.

    Parameters
    ----------
    prob : DataArray or path
        The map (see :func:`open_map`; ``group`` chooses a Zarr group, ``chunks`` the Dask chunks).
    options : PickOptions
        Every setting of the pick (default: ``PickOptions()``, connected components at 0.5).
    classes : list of str, optional
        The classes (channels) to pick; default all.
    tomo : str, optional
        The tomogram name written in the table (default: from the file name).
    labels : bool
        Also return lazy label images of the kept clusters.
    context_map : DataArray, optional
        The context mask itself, instead of opening ``options.context.target``.

    Returns
    -------
    PickResult
        The table, the per-class summary, all clusters (with ``kept``) and the label images.
    """
    from deepict_dask.io.progress import compute

    options = options if options is not None else PickOptions()
    vol = open_map(prob, group=group, chunks=chunks) if not isinstance(prob, xr.DataArray) else prob
    if chunks is not None and isinstance(prob, xr.DataArray):
        vol = vol.chunk({d: chunks for d in ("z", "y", "x")} if isinstance(chunks, int) else chunks)
    vs, source = voxel_size_of(vol), vol.attrs.get("source")
    units, softmax, background, class_names = _map_layout(vol, classes)
    region = _Region.of(options.context, vol, vs, chunks, context_map)
    method = get_method(options.method.name)
    params = options.method.block_params(options.radius)
    passes, states = [], []
    for unit_name, channels in units:  # one graph for all class units: the map is read once
        spec = label.BlockSpec(threshold=options.threshold, scale=probability_scale(vol.dtype, vol.attrs),
                               connectivity=options.connectivity, channels=channels, softmax=softmax,
                               background=background, mask_mode=region.mask_mode)
        uparams = {**params, "unit": unit_name, "vote_names": class_names if softmax else None}
        states.append(method.prepare(vol.data, region.mask, spec, uparams, vs) if method.prepare else None)
        passes.append(label.build_pass(vol.data, region.mask, method, spec, uparams, states[-1], vs))
    computed = compute(*[(p[1], p[2]) for p in passes])
    parts_all = [part for parts, _ in computed for part in parts]
    check_value_range(min((p["vmin"] for p in parts_all), default=0.0), max((p["vmax"] for p in parts_all), default=0.0),
                      any(p["nan"] for p in parts_all), source)
    sizes = _size_range(options, vs)
    n_before = {c: 0 for c in ((classes or class_names) if softmax else [u for u, _ in units])}
    out = _Outputs(vol, _tomo_name(vol, tomo), options)
    for (unit_name, _), (ids, _, _, contexts), (parts, pairs), state in zip(units, passes, computed, states):
        clusters, luts = stats.merge_partials(parts, pairs)
        _classify(clusters, unit_name, class_names if softmax else None)
        for cls, n in clusters["class"].value_counts().items():
            n_before[cls] = n_before.get(cls, 0) + int(n)
        keep, extra = _keep(clusters, options, sizes, region, classes if softmax else None, vs)
        out.add(unit_name, clusters, keep, extra + (["class_fraction"] if softmax else []))
        if labels or options.centerline:
            out.label(unit_name, method, region.mask, ids, luts, contexts, state)
    return out.result(n_before, labels)


@dataclass
class _Region:
    """The context mask of a pick and how it acts (see :mod:`.context`)."""

    mask: Any = None
    mode: str | None = None
    invert: bool = False
    mask_mode: str | None = None
    distance_A: float | None = None
    reach_A: float = 0.0

    @classmethod
    def of(cls, rule: ContextRule | None, vol: xr.DataArray, vs, chunks: Any, given: xr.DataArray | None) -> _Region:
        if rule is None and given is None:
            return cls()
        rule = rule if rule is not None else ContextRule(target="<context_map>")
        mvol = given if given is not None else open_map(rule.target, group=rule.group, chunks=chunks)
        distance_A = rule.distance.angstrom(vs) if rule.distance is not None else None
        reach_A = (rule.reach.angstrom(vs) if rule.reach is not None else 0.0) or max(distance_A or 0.0, 20 * float(vs[2]))
        mask_mode = {"intersection": "multiply_inverse" if rule.invert else "multiply"}.get(rule.mode, "count")
        return cls(ctxmod.binary_mask(mvol, vol, mvol.attrs.get("source")), rule.mode, rule.invert, mask_mode,
                   distance_A, reach_A)


def _size_range(options: PickOptions, vs: Sequence[float]) -> tuple[int, int | None]:
    """(min, max) cluster size in voxels: the options', else from the expected radius, else (1, None)."""
    min_size, max_size = options.min_size, options.max_size
    if options.radius is not None and min_size is None and max_size is None:
        min_size, max_size = filters.size_range_from_radius(options.radius.angstrom(vs), vs)
    return filters.check_size_range(min_size, max_size)


def _classify(clusters: pd.DataFrame, unit_name: str, vote_names: Sequence[str] | None) -> None:
    """The ``class`` of each cluster: its unit's, or (softmax maps) the class most of its voxels vote for."""
    if vote_names is None:
        clusters["class"] = unit_name
        return
    votes = clusters[[c for c in clusters.columns if c.startswith("votes_")]].to_numpy()
    best = votes.argmax(axis=1) if len(votes) else np.zeros(0, int)
    clusters["class"] = np.asarray(vote_names, dtype=object)[best] if len(best) else []
    clusters["class_fraction"] = votes.max(axis=1) / np.maximum(clusters["size"].to_numpy(), 1) if len(votes) else []


def _keep(clusters: pd.DataFrame, options: PickOptions, sizes: tuple[int, int | None], region: _Region,
          classes: Sequence[str] | None, vs) -> tuple[np.ndarray, list[str]]:
    """Which clusters pass the size, class, context and duplicate filters; the extra table columns."""
    keep = filters.size_mask(clusters["size"].to_numpy(), *sizes)
    if classes:
        keep &= clusters["class"].isin(list(classes)).to_numpy()
    centre = ["wz", "wy", "wx"] if options.weighted else ["z", "y", "x"]
    extra: list[str] = []
    if region.mask is not None:
        clusters["context_voxels"] = clusters["in_mask"]
        clusters["context_distance_A"] = np.full(len(clusters), np.nan)
        if keep.any():
            clusters.loc[keep, "context_distance_A"] = ctxmod.distance_to_region(
                region.mask, clusters[centre].to_numpy()[keep], vs, region.reach_A)
        keep &= ctxmod.keep_by_context(region.mode, region.invert, clusters["in_mask"].to_numpy(),
                                       clusters["context_distance_A"].to_numpy(), region.distance_A)
        extra += ["context_distance_A"] + (["context_voxels"] if region.mask_mode == "count" else [])
    dup = options.duplicate_radius
    if dup is not None and keep.any():
        radius = dup.angstrom(vs) if isinstance(dup, Length) else tuple(float(r) for r in dup)
        idx = np.flatnonzero(keep)
        zyx = clusters.loc[keep, centre].to_numpy() * np.asarray(vs)
        keep[idx[~filters.remove_duplicates(zyx, clusters.loc[keep, "mean_prob"].to_numpy(), radius)]] = False
    return keep, extra


class _Outputs:
    """Collects the kept clusters of each class unit as table rows and (lazy) label images."""

    def __init__(self, vol: xr.DataArray, tomo: str, options: PickOptions) -> None:
        self.vol, self.tomo, self.options = vol, tomo, options
        self.vs, self.origin = voxel_size_of(vol), origin_of(vol)
        self.frames: list[pd.DataFrame] = []
        self.clusters: dict[str, pd.DataFrame] = {}
        self.images: dict[str, xr.DataArray] = {}
        self.renumber: dict[str, np.ndarray] = {}

    def add(self, unit: str, clusters: pd.DataFrame, keep: np.ndarray, extra: list[str]) -> None:
        clusters["kept"] = keep
        # survivors are renumbered 1..n in raster order; the label image uses the same numbers
        new = np.zeros(len(clusters) + 1, np.int64)
        new[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        clusters["pick_label"] = new[1:]
        self.clusters[unit], self.renumber[unit] = clusters, new
        if not self.options.centerline:
            kept = self._kept(unit)
            self.frames.append(tables.pick_table(kept, tomo=self.tomo, cls=kept["class"].tolist(), voxel_size=self.vs,
                                                 origin=self.origin, weighted=self.options.weighted, extra=extra))

    def _kept(self, unit: str) -> pd.DataFrame:
        kept = self.clusters[unit].loc[self.clusters[unit]["kept"]].copy()
        kept["label"] = kept["pick_label"]
        return kept

    def label(self, unit: str, method, mask, ids, luts, contexts, state) -> None:
        new = self.renumber[unit]
        blut = {b: np.concatenate([[0], new[lut]]) for b, lut in zip(ids, luts)}
        img = label.label_image(self.vol.data, mask, method, contexts, blut, int(self.clusters[unit]["kept"].sum()), state)
        self.images[unit] = make_volume(img, self.vs, self.origin, name=unit, attrs={
            "source": self.vol.attrs.get("source"), "pick": {"threshold": self.options.threshold, "class": unit}})

    def result(self, n_before: dict[str, int], labels: bool) -> PickResult:
        if self.options.centerline:
            from deepict_dask.pick.centerline import centerline_table

            for unit in self.clusters:
                self.frames.append(centerline_table(self.images[unit].data, self._kept(unit), voxel_size=self.vs,
                                                    origin=self.origin, spacing_A=self.options.spacing.angstrom(self.vs),
                                                    tomo=self.tomo))
        nonempty = [f for f in self.frames if not f.empty]
        table = pd.concat(nonempty, ignore_index=True) if nonempty else self.frames[0]
        return PickResult(table=table, summary=tables.summary(table, n_before), clusters=self.clusters,
                          labels=self.images if labels else {}, voxel_size=self.vs, shape=spatial_shape(self.vol))


def write_outputs(result: PickResult, out: str | os.PathLike, *, labels_out: str | os.PathLike | None = None,
                  summary_out: str | os.PathLike | None = None, overwrite: bool = True) -> Path:
    """Write label images (``labels_out``: OME-Zarr store, groups ``labels/<class>``), the summary JSON
    and the table (last, so a finished table means a finished pick). Each output is atomic.

    Parameters
    ----------
    result : PickResult
        What :func:`pick` returned.
    out : path
        The table; its suffix chooses the format (see :mod:`deepict_dask.io.tables`).
    labels_out : path, optional
        OME-Zarr store for the label images (``pick(..., labels=True)``).
    summary_out : path, optional
        JSON file for the per-class summary.
    overwrite : bool
        Replace existing outputs.

    Returns
    -------
    Path
        The table written.
    """
    import json

    from deepict_dask.io import write_ome_zarr
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.io.tables import table_format, write_table
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

def tuned_settings(vol: xr.DataArray) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Per class, the picking settings tuned for the model that made this prediction, and its file.

    The model file is the one ``deepict predict`` recorded; its entries count only while it holds
    the same network (its hash, or the hash it was tuned from, is the prediction's).
    """
    from deepict_dask.io.checksum import file_sha256
    from deepict_dask.models.spec import read_model_info, require_segmentation

    pred = vol.attrs.get("prediction")
    path = Path(pred["model_path"]) if isinstance(pred, dict) and pred.get("model_path") else None
    if path is None or not path.is_file():
        return {}, None
    try:
        info = read_model_info(path)
    except InputError as exc:
        log.warning("no tuned settings: %s", exc)
        return {}, None
    require_segmentation(info, path)  # an autoencoder's output is an image, not probabilities to pick
    picking = info.picking
    if not picking:
        return {}, path
    sha = {pred.get("model_sha256"), None} - {None}
    current = file_sha256(path)
    same = {c: e for c, e in picking.items() if sha & {current, e.get("validated_sha256")}}
    if len(same) < len(picking):
        log.warning("%s changed since this prediction was made: its tuned settings are not used", path)
    return same, path


def with_tuned(options: PickOptions, entry: Mapping[str, Any]) -> tuple[PickOptions, dict[str, str]]:
    """``options`` with the settings the user left unset taken from the model's tuned ``entry``.

    The one precedence rule of ``deepict pick`` and ``deepict run``: the user's setting, else the
    model's tuned one, else the built-in default. ``entry`` may hold ``threshold``, ``min_size``
    (not used when the user gave any size bound or a radius), ``method`` and ``min_distance_A`` (used
    when the method is the tuned one and takes a ``min_distance``). Returns the options and, for the
    user, the settings taken from the model.
    """
    given = options.model_fields_set
    values = options.model_dump(exclude_unset=True)
    note: dict[str, str] = {}
    if "threshold" not in given and "threshold" in entry:
        values["threshold"], note["threshold"] = float(entry["threshold"]), f"{entry['threshold']:g}"
    if not given & {"min_size", "max_size", "radius"} and "min_size" in entry:
        values["min_size"], note["min size"] = int(entry["min_size"]), str(entry["min_size"])
    method = options.method.model_dump(exclude_unset=True) | {"name": options.method.name}
    if "method" not in given and "method" in entry:
        method, note["method"] = {"name": entry["method"]}, str(entry["method"])
    params = METHODS[method["name"]].params if method["name"] in METHODS else None
    if (params is not None and "min_distance" in params.model_fields and "min_distance" not in method
            and entry.get("method") == method["name"] and entry.get("min_distance_A") is not None):
        method["min_distance"] = Length(float(entry["min_distance_A"]), "A")
        note["min distance"] = f"{entry['min_distance_A']:g} A"
    if not note:
        return options, note
    return build(PickOptions, values | {"method": method}), note


def plan_picks(class_names: Sequence[str], tuned: Mapping[str, Mapping[str, Any]], options: PickOptions,
               ) -> tuple[list[tuple[list[str], PickOptions]], dict[str, dict[str, str]]]:
    """Group classes by the options they get (:func:`with_tuned` per class).

    Returns the groups ``[(classes, options)]`` and, per class, the settings taken from the model.
    """
    groups: list[tuple[list[str], PickOptions]] = []
    notes: dict[str, dict[str, str]] = {}
    for cls in class_names:
        settings, note = with_tuned(options, tuned.get(cls, {}))
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
