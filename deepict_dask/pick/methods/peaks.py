"""``peaks``: local maxima of the probability map, the template-matching way of picking.

No clusters are formed first: every local maximum of the (lightly smoothed) probability map that
lies in the foreground and is the highest within ``min_distance`` is one particle. Its row reports
the peak's position (x, y, z), the peak value as ``score`` and, as ``size``, the number of voxels
of its watershed basin (the foreground voxels that drain to it), plus every statistic the pick
stage computes for a cluster (mean/max probability, bounding box, context). Seeds, halo and
chunk-independence are those of :mod:`.watershed`, with seeds on the probability map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from deepict_dask.pick.methods import register_method
from deepict_dask.pick.methods.watershed import WatershedParams, split_method


class PeaksParams(WatershedParams):
    """The watershed's settings; seeds are always maxima of the probability map."""

    name: Literal["peaks"] = "peaks"  # type: ignore[assignment]
    seeds: Literal["prob"] | None = None  # type: ignore[assignment]


PEAKS = split_method("peaks", PeaksParams)
register_method(PEAKS)


def label_keys(partials: Sequence[dict], luts: Sequence[np.ndarray], n_labels: int) -> np.ndarray:
    """Seed key of every final label (index ``label - 1``), from the merge's per-piece lookup tables."""
    out = np.zeros(n_labels, np.uint64)
    for part, lut in zip(partials, luts):
        if len(lut):
            out[np.asarray(lut, np.int64) - 1] = np.asarray(part["key"], np.uint64)
    return out


def seed_positions(keys: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(n, 3) z, y, x voxel positions of seeds from their keys (global raster index + 1)."""
    if len(keys) == 0:
        return np.zeros((0, 3), np.float64)
    return np.stack(np.unravel_index((np.asarray(keys, np.uint64) - np.uint64(1)).astype(np.int64), tuple(shape)), axis=1).astype(np.float64)


def peak_rows(table: pd.DataFrame, partials: Sequence[dict], luts: Sequence[np.ndarray], shape: Sequence[int]) -> pd.DataFrame:
    """The merged cluster table with each basin's row moved to its peak: ``z, y, x`` (and the
    weighted ``wz, wy, wx``) become the seed position, ``peak`` its maximum probability."""
    out = table.copy()
    pos = seed_positions(label_keys(partials, luts, len(table)), shape)
    for i, axis in enumerate("zyx"):
        out[axis] = pos[:, i]
        if f"w{axis}" in out.columns:
            out[f"w{axis}"] = pos[:, i]
    out["peak"] = out["max_prob"]
    return out


def find_peaks(prob: np.ndarray, threshold: float, params: dict, *, connectivity: int = 26) -> pd.DataFrame:
    """In-memory peaks of a 3D probability map: one row per peak with ``z, y, x`` (voxels),
    ``score`` (maximum probability of its basin, i.e. the peak of the unsmoothed map) and ``size``
    (voxels of its basin). Used for figures and as a reference for the blockwise path."""
    from deepict_dask.pick.methods.watershed import split_volume

    prob = np.asarray(prob, np.float32)
    labels, keys, _ = split_volume(prob, threshold, params, connectivity=connectivity)
    n = len(keys)
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n + 1)[1:]
    score = np.zeros(n + 1, np.float32)
    np.maximum.at(score, flat, prob.ravel())
    pos = seed_positions(keys, prob.shape)
    return pd.DataFrame({"z": pos[:, 0], "y": pos[:, 1], "x": pos[:, 2], "score": score[1:], "size": size.astype(np.int64)})
