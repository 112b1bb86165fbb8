"""Threshold x minimum-cluster-size sweeps of a probability map against true particle positions.

The network is never re-run: for each probability threshold the map is clustered once (connected
components with per-cluster size, centroid and mean probability), and every minimum size is then a
filter of that cluster table, evaluated with the optimal one-to-one matching of
:mod:`deepict_dask.evaluate.picking`. Counts are pooled over tomograms before F1 is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.evaluate.picking import evaluate_picks, ratios
from deepict_dask.io.volume import origin_of, voxel_size_of


def cluster_stats(prob: xr.DataArray, threshold: float, connectivity: int = 26) -> pd.DataFrame:
    """Connected components of ``prob >= threshold`` with size, centroid (x, y, z voxels) and score.

    Uses the pick stage's chunked labelling and statistics (no size filter), so a sweep scales like
    ``deepict pick`` and agrees with it exactly.
    """
    from deepict_dask.pick.api import pick
    from deepict_dask.pick.options import PickOptions

    table = pick(prob, PickOptions(threshold=threshold, min_size=1, connectivity=connectivity)).table
    return table[["x", "y", "z", "size", "score"]].astype(float).reset_index(drop=True)


def _as_table(stats: pd.DataFrame, tomo: str, cls: str, vol: xr.DataArray) -> pd.DataFrame:
    vz, vy, vx = voxel_size_of(vol)
    oz, oy, ox = origin_of(vol)
    df = stats.copy()
    df.insert(0, "class", cls)
    df.insert(0, "tomo", tomo)
    df["x_A"], df["y_A"], df["z_A"] = ox + df["x"] * vx, oy + df["y"] * vy, oz + df["z"] * vz
    return df


def sweep(
    maps: Mapping[str, xr.DataArray],
    truth: pd.DataFrame,
    tolerance: float,
    *,
    thresholds: Sequence[float],
    min_sizes: Sequence[int],
    max_size: int | None = None,
    unit: str = "vox",
    class_name: str | None = None,
    connectivity: int = 26,
    clusters: Callable[[xr.DataArray, float], pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """F1 over a grid of thresholds and minimum sizes; the best setting's counts at the top level.

    ``maps`` maps tomogram names (as in ``truth["tomo"]``) to 3D probability maps of one class;
    ``class_name`` selects that class in the truth table (default: all its rows).

    Parameters
    ----------
    maps : mapping of str to DataArray
        Tomogram name -> its 3D probability map of the class.
    truth : DataFrame
        True positions (``tomo``, optionally ``class``, x/y/z) of every tomogram in ``maps``.
    tolerance : float
        The matching radius, in ``unit``.
    thresholds : sequence of float
        Probability thresholds to try, each in (0, 1].
    min_sizes : sequence of int
        Minimum cluster sizes (voxels) to try.
    max_size : int, optional
        Clusters larger than this (voxels) are dropped at every setting.
    unit : str
        ``"vox"`` or ``"A"``, as in :func:`~deepict_dask.evaluate.picking.evaluate_picks`.
    class_name : str, optional
        The class of the truth rows to compare with.
    connectivity : int
        Voxel connectivity (6, 18 or 26) of the default connected-component clustering.
    clusters : callable, optional
        ``clusters(map, threshold)`` -> a table of clusters (x, y, z, size, score); default
        :func:`cluster_stats` (the map is clustered once per threshold).

    Returns
    -------
    dict
        The best setting's ``tp``/``fp``/``fn``/``precision``/``recall``/``f1``, ``best_threshold``,
        ``best_min_size``, ``per_class``, ``tolerance``, ``unit``, the whole ``grid`` (one row per
        setting) and ``edges`` (warnings when the best setting lies on the edge of the grid).
    """
    thresholds = sorted({float(t) for t in thresholds})
    min_sizes = sorted({int(s) for s in min_sizes})
    if not thresholds or not min_sizes:
        raise ConfigError("a sweep needs at least one threshold and one minimum size")
    if any(not 0 < t <= 1 for t in thresholds):
        raise ConfigError(f"thresholds must lie in (0, 1], got {thresholds}")
    if "tomo" not in truth.columns:
        raise InputError("the truth table has no 'tomo' column")
    if class_name is not None:
        if class_name not in set(truth["class"].astype(str)):
            raise InputError(f"class {class_name!r} not in the truth table (it has {sorted(set(truth['class']))})")
        truth = truth[truth["class"].astype(str) == class_name]
    missing = [t for t in maps if t not in set(truth["tomo"].astype(str))]
    if missing:
        raise InputError(
            f"no truth for tomogram(s) {missing}; the truth table has {sorted(set(truth['tomo'].astype(str)))}"
        )
    cls = class_name or "particle"
    truth = truth.assign(**{"class": cls})
    find = clusters or (lambda vol, t: cluster_stats(vol, t, connectivity))
    counts: dict[tuple[float, int], np.ndarray] = {}
    for tomo, vol in maps.items():
        t_truth = truth[truth["tomo"].astype(str) == tomo]
        for thr in thresholds:
            table = _as_table(find(vol, thr), tomo, cls, vol)
            if max_size is not None:
                table = table[table["size"] <= max_size]
            for s in min_sizes:
                kept = table[table["size"] >= s]
                m = evaluate_picks(kept, t_truth, tolerance, unit=unit, curve_points=0, by_class=False).metrics
                counts[(thr, s)] = counts.get((thr, s), np.zeros(3, np.int64)) + [m["tp"], m["fp"], m["fn"]]
    grid = []
    for (thr, s), (tp, fp, fn) in sorted(counts.items()):
        grid.append({"threshold": thr, "min_size": s, "tp": int(tp), "fp": int(fp), "fn": int(fn), **ratios(tp, fp, fn)})
    best = robust_best(grid, thresholds, min_sizes)
    out: dict[str, Any] = {k: best[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}
    out["best_threshold"] = best["threshold"]
    out["best_min_size"] = best["min_size"]
    out["per_class"] = {cls: {k: best[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}}
    out["tolerance"] = float(tolerance)
    out["unit"] = unit
    out["grid"] = grid
    out["edges"] = grid_edges({"threshold": thresholds, "min_size": min_sizes}, best)
    return out


def robust_best(grid: Sequence[Mapping[str, Any]], thresholds: Sequence[float],
                min_sizes: Sequence[int]) -> Mapping[str, Any]:
    """The best-F1 setting; among equals, the one whose grid neighbours score best.

    A well-trained model scores the same over a plateau of settings, and the plateau's corner (the
    highest threshold and size, say) is the setting most likely to fall off it on new data. Each tied
    setting is scored by the mean F1 of its 3x3 neighbourhood, counting settings beyond the grid as 0,
    so the centre of the plateau wins; remaining ties go to the higher threshold and size.
    """
    f1 = np.zeros((len(thresholds) + 2, len(min_sizes) + 2))
    ti = {t: i + 1 for i, t in enumerate(thresholds)}
    si = {s: j + 1 for j, s in enumerate(min_sizes)}
    for r in grid:
        f1[ti[r["threshold"]], si[r["min_size"]]] = r["f1"]
    top = max(r["f1"] for r in grid)

    def rank(r: Mapping[str, Any]) -> tuple[float, float, float, int]:
        i, j = ti[r["threshold"]], si[r["min_size"]]
        return (r["f1"], float(f1[i - 1:i + 2, j - 1:j + 2].mean()), r["threshold"], r["min_size"])

    return max((r for r in grid if r["f1"] >= top - 1e-12), key=rank)


# the values beyond which no setting exists: a best setting there is not on an open edge
_LIMITS = {"threshold": (0.0, 1.0), "min_size": (1, None), "min_distance_A": (0.0, None)}
_OPTIONS = {"threshold": "thresholds (--thresholds)", "min_size": "min_sizes (--min-sizes)",
            "min_distance_A": "min_distances (--min-distances)"}


def grid_edges(axes: Mapping[str, Sequence[float]], best: Mapping[str, Any]) -> list[str]:
    """One sentence per axis whose best value is the grid's smallest or largest of several.

    A best setting on such an edge may not be the best at all: the grid should be widened there.
    """
    notes = []
    for name, values in axes.items():
        values = sorted(values)
        if len(values) < 2 or name not in best:
            continue
        low, high = _LIMITS.get(name, (None, None))
        value = best[name]
        side = None
        if value == values[0] and (low is None or value > low):
            side = "smallest"
        elif value == values[-1] and (high is None or value < high):
            side = "largest"
        if side:
            notes.append(f"the best {name} {value:g} is the {side} value tried: widen {_OPTIONS.get(name, name)} "
                         "beyond it")
    return notes


def parse_values(text: str, kind: type = float) -> list:
    """``0.1,0.2`` or ``START:STOP:STEP`` (STOP included) -> a list of ``kind`` numbers.

    A bad list is one :class:`ConfigError` showing both accepted spellings.
    """
    try:
        if ":" in text:
            a, b, c = (float(v) for v in text.split(":"))
            if c <= 0:
                raise ValueError("step must be positive")
            n = int(round((b - a) / c)) + 1
            vals = [a + i * c for i in range(n) if a + i * c <= b + 1e-9]
            return [kind(round(v, 10)) for v in vals]
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"cannot read {text!r} as a list (0.3,0.5) or a range (0.1:0.9:0.1): {exc}") from exc


def map_name(item: str) -> tuple[str, str]:
    """``TOMO=PATH`` -> (TOMO, PATH); a plain path (even one containing ``=``) -> (its tomogram name, it)."""
    from pathlib import Path

    from deepict_dask.io import tomogram_name

    name, sep, path = item.partition("=")
    if sep and not Path(item).exists():
        return name, path
    return tomogram_name(item), item


def named_maps(items: Sequence[str], truth: pd.DataFrame) -> dict[str, str]:
    """Tomogram name -> map path for ``[TOMO=]MAP`` items; one map against a one-tomogram truth
    takes the truth's name whatever its file is called."""
    pairs = [map_name(p) for p in items]
    tomos = sorted(set(truth["tomo"].astype(str)))
    if len(pairs) == 1 and len(tomos) == 1 and pairs[0][0] not in tomos:
        pairs = [(tomos[0], pairs[0][1])]
    return dict(pairs)


def open_sweep_maps(items: Sequence[str], truth: pd.DataFrame, *, group: str | None = None,
                    channel: str | int | None = None) -> dict[str, xr.DataArray]:
    """The probability maps of a sweep by tomogram name: one spatial channel each (``channel`` of a
    multi-class map), with the map's voxel size, origin and attributes."""
    from deepict_dask.evaluate.files import open_prediction
    from deepict_dask.evaluate.segmentation import spatial_array
    from deepict_dask.io.volume import make_volume

    maps = {}
    for name, path in named_maps(items, truth).items():
        vol = open_prediction(path, group)
        arr = spatial_array(vol, channel, path, "probability map")
        maps[name] = make_volume(arr, voxel_size_of(vol), origin_of(vol), attrs=dict(vol.attrs))
    return maps
