"""Tune a model's picking settings on validation tomograms and record them in the model file.

For each class, threshold x minimum size (x watershed/peaks minimum distance) is swept against the
true positions (:func:`deepict_dask.evaluate.sweep.sweep`); the best F1 setting is written into the
model's metadata (``picking``), where ``deepict pick`` and ``deepict run`` take their defaults from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.evaluate.sweep import grid_edges, sweep

SPLIT_METHODS = ("watershed", "peaks")


def _check_grid(thresholds: Sequence[float], min_sizes: Sequence[int], method: str,
                min_distances: Sequence[float] | None) -> None:
    """A one-value axis cannot show whether the best lies beyond it: tuning needs two or more."""
    axes = {"thresholds (--thresholds)": thresholds, "min_sizes (--min-sizes)": min_sizes}
    if method in SPLIT_METHODS:
        axes["min_distances (--min-distances)"] = min_distances or []
    elif min_distances:
        raise ConfigError(f"min_distances (--min-distances) applies to method {' or '.join(SPLIT_METHODS)}, not {method}")
    for option, values in axes.items():
        if len(set(values)) < 2:
            raise ConfigError(f"{option} needs at least two values to tune over, got {list(values)}")


def _check_same_model(maps: Mapping[str, xr.DataArray], model: Path, info_picking: Mapping[str, Any]) -> None:
    """Refuse predictions that a different network made (a tuned file keeps its tuned-from hash)."""
    from deepict_dask.io.checksum import file_sha256

    known = {file_sha256(model)} | {e.get("validated_sha256") for e in info_picking.values()}
    for tomo, vol in maps.items():
        pred = vol.attrs.get("prediction")
        sha = pred.get("model_sha256") if isinstance(pred, dict) else None
        if sha and sha not in known:
            raise InputError(f"the prediction of {tomo} was made by another model file "
                             f"(sha256 {sha[:12]}...), not by this one", model)


def _class_map(vol: xr.DataArray, cls: str, tomo: str) -> xr.DataArray:
    """The class's 3D probability map, keeping the voxel size, origin and probability scale."""
    from deepict_dask.evaluate.segmentation import spatial_array
    from deepict_dask.io.volume import make_volume, origin_of, voxel_size_of

    arr = spatial_array(vol, cls if vol.ndim == 4 else None, tomo, "probability map")
    return make_volume(arr, voxel_size_of(vol), origin_of(vol), attrs=dict(vol.attrs))


def _finder(method: str, connectivity: int, min_distance_A: float | None):
    """Clusters (x, y, z, size, score) of a map at a threshold, as ``deepict pick --method METHOD`` makes them."""
    from deepict_dask.options import build
    from deepict_dask.pick.api import pick
    from deepict_dask.pick.options import PickOptions
    from deepict_dask.units import Length

    params = {"min_distance": Length(min_distance_A, "A")} if min_distance_A is not None else {}

    def find(vol: xr.DataArray, threshold: float) -> pd.DataFrame:
        options = build(PickOptions, {"threshold": threshold, "min_size": 1, "connectivity": connectivity,
                                      "method": {"name": method, **params}})
        table = pick(vol, options).table
        return table[["x", "y", "z", "size", "score"]].astype(float).reset_index(drop=True)

    return find


def tune_class(maps: Mapping[str, xr.DataArray], truth: pd.DataFrame, cls: str, tolerance: float, *,
               unit: str, thresholds: Sequence[float], min_sizes: Sequence[int], method: str = "cc",
               min_distances: Sequence[float] | None = None, connectivity: int = 26,
               max_size: int | None = None) -> dict[str, Any]:
    """The best setting of one class over the whole grid (``min_distances`` in Angstrom).

    Parameters
    ----------
    maps : mapping of str to DataArray
        Tomogram name -> its prediction (the class's channel is taken from a 4D map).
    truth : DataFrame
        True positions of every tomogram in ``maps``.
    cls : str
        The class to tune.
    tolerance : float
        The matching radius, in ``unit``.
    unit : str
        ``"vox"`` or ``"A"``.
    thresholds, min_sizes : sequence
        The probability thresholds and minimum cluster sizes (voxels) to try.
    method : str
        The picking method whose clusters are scored (``cc``, ``watershed``, ``peaks``...).
    min_distances : sequence of float, optional
        Seed distances (Angstrom) to try for ``watershed`` and ``peaks``; ignored by other methods.
    connectivity : int
        Voxel connectivity (6, 18 or 26).
    max_size : int, optional
        Clusters larger than this (voxels) are dropped.

    Returns
    -------
    dict
        ``entry`` (the chosen settings with their F1, precision, recall, tolerance, unit and the
        validation tomograms), ``edges`` (grid-edge warnings) and ``grid`` (the best distance's grid).
    """
    class_maps = {tomo: _class_map(vol, cls, tomo) for tomo, vol in maps.items()}
    distances = sorted({float(v) for v in min_distances or []}) if method in SPLIT_METHODS else [None]
    runs = []
    for d in distances:
        res = sweep(class_maps, truth, tolerance, thresholds=thresholds, min_sizes=min_sizes, max_size=max_size,
                    unit=unit, class_name=cls, connectivity=connectivity, clusters=_finder(method, connectivity, d))
        runs.append({**res, "min_distance_A": d})
    best = max(runs, key=lambda r: r["f1"])  # the first (smallest distance) of equals
    axes: dict[str, Sequence[float]] = {"threshold": thresholds, "min_size": min_sizes}
    chosen = {"threshold": best["best_threshold"], "min_size": best["best_min_size"]}
    if method in SPLIT_METHODS:
        axes["min_distance_A"] = list(min_distances or [])
        chosen["min_distance_A"] = best["min_distance_A"]
    entry = {**chosen, "method": method, "f1": round(float(best["f1"]), 4),
             "precision": round(float(best["precision"]), 4), "recall": round(float(best["recall"]), 4),
             "tolerance": float(tolerance), "unit": unit, "validated_on": sorted(maps)}
    return {"entry": entry, "edges": grid_edges(axes, chosen), "grid": best["grid"]}


def tune(model: str | os.PathLike, maps: Mapping[str, xr.DataArray], truth: pd.DataFrame, tolerance: float, *,
         classes: Sequence[str] | None = None, unit: str = "vox", thresholds: Sequence[float],
         min_sizes: Sequence[int], method: str = "cc", min_distances: Sequence[float] | None = None,
         connectivity: int = 26, max_size: int | None = None, write: bool = True) -> dict[str, Any]:
    """Tune every class in ``classes`` (default: all the model's) and write the settings into ``model``.

    ``maps``: tomogram name -> that tomogram's prediction by this model (``deepict predict`` store
    group, channels named after the classes; a 3D map for a one-class model). ``truth`` holds the
    true positions of every tomogram (``tomo``, ``class``, x/y/z). Returns per class the written
    entry, the grid-edge warnings and the grid of the best minimum distance.

    Parameters
    ----------
    model : path
        The model file; its ``picking`` metadata receives the tuned settings.
    maps : mapping of str to DataArray
        Tomogram name -> that tomogram's prediction by this model.
    truth : DataFrame
        True positions of every validation tomogram (``tomo``, ``class``, x/y/z).
    tolerance : float
        The matching radius, in ``unit``.
    classes : sequence of str, optional
        The classes to tune; default all the model's.
    unit : str
        ``"vox"`` or ``"A"``.
    thresholds, min_sizes : sequence
        The probability thresholds and minimum cluster sizes (voxels) to try.
    method : str
        The picking method to tune (``cc``, ``watershed``, ``peaks``...).
    min_distances : sequence of float, optional
        Seed distances (Angstrom) to try for ``watershed`` and ``peaks``.
    connectivity : int
        Voxel connectivity (6, 18 or 26).
    max_size : int, optional
        Clusters larger than this (voxels) are dropped.
    write : bool
        Write the settings into ``model`` (False: only report them).

    Returns
    -------
    dict
        Class -> ``{"entry", "edges", "grid"}`` as :func:`tune_class` returns them (``entry`` also
        records ``validated_sha256``).
    """
    from deepict_dask.io.checksum import file_sha256
    from deepict_dask.models.spec import read_model_info, require_segmentation

    model = Path(model)
    info = read_model_info(model)
    require_segmentation(info, model)
    classes = list(classes or info.classes)
    unknown = [c for c in classes if c not in info.classes]
    if unknown:
        raise InputError(f"model '{info.name}' has no class {', '.join(map(repr, unknown))} "
                         f"(it has {', '.join(info.classes)})", model)
    _check_grid(thresholds, min_sizes, method, min_distances)
    if not maps:
        raise InputError("no validation predictions given")
    _check_same_model(maps, model, info.picking)
    if "tomo" not in truth.columns:
        raise InputError("the truth table has no 'tomo' column")
    truth_classes = set(truth["class"].astype(str)) if "class" in truth.columns else set()
    validated_sha = next((m.attrs["prediction"].get("model_sha256") for m in maps.values()
                          if isinstance(m.attrs.get("prediction"), dict)), None) or file_sha256(model)
    results: dict[str, Any] = {}
    for cls in classes:
        if cls not in truth_classes:
            raise InputError(f"the truth tables have no rows of class {cls!r} (they have {sorted(truth_classes)})")
        for tomo in maps:
            if not ((truth["tomo"].astype(str) == tomo) & (truth["class"].astype(str) == cls)).any():
                raise InputError(f"the truth tables have no {cls!r} rows for tomogram {tomo!r}: every validation "
                                 "tomogram needs its true positions")
        res = tune_class(maps, truth, cls, tolerance, unit=unit, thresholds=thresholds, min_sizes=min_sizes,
                         method=method, min_distances=min_distances, connectivity=connectivity, max_size=max_size)
        res["entry"]["validated_sha256"] = validated_sha
        results[cls] = res
    if write:
        from deepict_dask.models.files import set_picking

        set_picking(model, {cls: r["entry"] for cls, r in results.items()})
    return results
