"""Cluster filters: size (inclusive bounds, or from an expected radius) and duplicate removal."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError


def size_range_from_radius(radius_A: float, voxel_size: Sequence[float], low: float = 0.2,
                           high: float = 2.0) -> tuple[int, int]:
    """(min, max) voxels for a particle of ``radius_A``: ``low`` and ``high`` times its sphere volume.

    Predicted blobs are usually smaller than the particle (the network is trained on a shrunken
    mask), hence the generous lower bound.
    """
    if not radius_A > 0:
        raise InputError(f"the expected particle radius must be positive, got {radius_A}")
    volume = 4.0 / 3.0 * math.pi * radius_A**3 / float(np.prod(voxel_size))
    return max(1, int(math.floor(low * volume))), max(1, int(math.ceil(high * volume)))


def check_size_range(min_size: int | None, max_size: int | None) -> tuple[int, int | None]:
    lo = 1 if min_size is None else int(min_size)
    if lo < 1:
        raise InputError(f"min_size must be at least 1, got {min_size}")
    if max_size is not None and int(max_size) < lo:
        raise InputError(f"max_size ({max_size}) is smaller than min_size ({lo})")
    return lo, None if max_size is None else int(max_size)


def size_mask(size: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
    """Clusters with ``min_size <= size <= max_size`` (both bounds inclusive)."""
    keep = size >= min_size
    if max_size is not None:
        keep &= size <= max_size
    return keep


def remove_duplicates(points_A: np.ndarray, score: np.ndarray, radius_A: float | Sequence[float]) -> np.ndarray:
    """Boolean keep-mask: within ``radius_A`` of each other only the higher-scoring point survives.

    ``radius_A`` may be one number (sphere) or a (z, y, x) triple (ellipsoid: the points are scaled by
    the semi-axes and compared at distance 1). Greedy in decreasing score (ties: lower index first),
    so a kept point never has a kept neighbour closer than the radius.
    """
    from scipy.sparse import coo_matrix
    from scipy.spatial import cKDTree

    pts = np.asarray(points_A, dtype=np.float64).reshape(-1, 3)
    keep = np.ones(len(pts), bool)
    if len(pts) < 2:
        return keep
    r = np.broadcast_to(np.asarray(radius_A, dtype=np.float64), (3,))
    if not np.all(r > 0):
        raise InputError(f"duplicate radius must be positive, got {radius_A}")
    pairs = cKDTree(pts / r).query_pairs(1.0, output_type="ndarray")
    if len(pairs) == 0:
        return keep
    n = len(pts)
    adj = coo_matrix((np.ones(2 * len(pairs), bool), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                     shape=(n, n)).tocsr()
    involved = np.unique(pairs)
    order = involved[np.lexsort((involved, -np.asarray(score, dtype=np.float64)[involved]))]
    indptr, indices = adj.indptr, adj.indices
    for i in order:
        if keep[i]:
            keep[indices[indptr[i]: indptr[i + 1]]] = False
            keep[i] = True
    return keep


def apply(df: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    return df.loc[np.asarray(keep, bool)].reset_index(drop=True)
