"""Assemble the project's coordinate table and the per-class summary from cluster statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.io.tables import empty_table, make_table

#: columns a pick table carries beyond the schema's required ones, in this order
PICK_COLUMNS = ["score", "size", "label", "mean_prob", "max_prob"]


def pick_table(clusters: pd.DataFrame, *, tomo: str, cls: str | Sequence[str], voxel_size, origin,
               weighted: bool = False, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Cluster statistics -> schema table (score = mean probability inside the cluster).

    ``weighted`` uses the probability-weighted centroid; ``extra`` names further columns of
    ``clusters`` to carry over (e.g. ``context_distance_A``, ``context_voxels``, ``class_fraction``).
    """
    extra = [c for c in extra if c in clusters.columns]
    if clusters.empty:
        return empty_table(PICK_COLUMNS + list(extra))
    cols = ["wz", "wy", "wx"] if weighted else ["z", "y", "x"]
    zyx = clusters[cols].to_numpy(dtype=np.float64)
    columns: dict[str, Any] = {
        "score": clusters["mean_prob"].to_numpy(),
        "size": clusters["size"].to_numpy().astype(np.float64),
        "label": clusters["label"].to_numpy().astype(np.int64),
        "mean_prob": clusters["mean_prob"].to_numpy(),
        "max_prob": clusters["max_prob"].to_numpy(),
    }
    for c in extra:
        columns[c] = clusters[c].to_numpy()
    cls_col = cls if isinstance(cls, str) else list(cls)
    return make_table(tomo, cls_col, zyx=zyx, voxel_size=voxel_size, origin=origin, **columns)


def summary(table: pd.DataFrame, n_before: dict[str, int] | None = None, bins: int = 10) -> dict[str, Any]:
    """Per class: picked count, clusters before filtering, size quantiles and a log-spaced histogram."""
    out: dict[str, Any] = {}
    classes = sorted(set(table["class"]) | set(n_before or {}))
    for cls in classes:
        sizes = table.loc[table["class"] == cls, "size"].to_numpy(dtype=np.float64) if "size" in table else np.zeros(0)
        entry: dict[str, Any] = {"picked": int(len(sizes))}
        if n_before is not None:
            entry["clusters_before_filters"] = int(n_before.get(cls, 0))
        if len(sizes):
            lo, hi = sizes.min(), sizes.max()
            edges = np.unique(np.geomspace(lo, max(hi, lo + 1), bins + 1).round().astype(np.int64))
            if len(edges) < 2:
                edges = np.array([int(lo), int(lo) + 1])
            counts, edges = np.histogram(sizes, bins=edges)
            entry.update(
                size_min=int(lo), size_median=float(np.median(sizes)), size_max=int(hi),
                size_histogram={"edges": edges.tolist(), "counts": counts.tolist()},
            )
        out[cls] = entry
    return out
