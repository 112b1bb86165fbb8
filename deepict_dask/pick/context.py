"""Spatial context: keep (or exclude) clusters by their relation to a binary region mask.

DeePiCt's three modes (see ``docs/pick_context_modes.md`` for pictures):

- ``intersection``: the map is multiplied by the mask *before* thresholding and clustering, so
  clusters are cut at the region border and the size filter sees the masked clusters;
  inverse: multiplied by ``1 - mask``.
- ``contact``: clusters are formed on the unmasked map and kept when at least one voxel lies in
  the mask (size filter on whole clusters); inverse: kept when none does.
- ``colocalization``: clusters formed on the unmasked map are kept when their centroid lies within
  ``context_distance`` of the mask; inverse: farther than that.

Every cluster also gets ``context_distance_A``, the Euclidean distance (Angstrom, anisotropic voxels
honoured) from its centroid's voxel to the nearest mask voxel, 0 inside the region. It is computed
*exactly* with ``edt`` on mask blocks carrying a halo of ``reach`` Angstrom, only for blocks that hold
centroids; a centroid farther than ``reach`` from the region gets the value of an exact distance
transform of the mask downsampled (any-pooling) by a factor ``f`` that keeps it below ~2 M voxels,
which over-estimates by at most ``f * sqrt(3) * voxel size``. ``inf`` means the mask is empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.volume import spatial_shape, voxel_size_of
from deepict_dask.pick.label import chunks_at_least, with_halo
from deepict_dask.pick.threshold import probability_scale, to_probability

MODES = ("intersection", "contact", "colocalization")
COARSE_VOXELS = 2_000_000


def check_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in MODES:
        raise InputError(f"context mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def binary_mask(mask: xr.DataArray, like: xr.DataArray, source: str | None = None) -> da.Array:
    """The context region as a boolean dask array aligned with ``like`` (same shape and voxel size).

    Masks may be boolean, labels (non-zero = inside) or probabilities (>= 0.5 inside; uint8 scaled).
    """
    if mask.ndim != 3:
        raise InputError(f"a context mask must be a 3D volume, got dims {mask.dims}", source)
    if spatial_shape(mask) != spatial_shape(like):
        raise InputError(
            f"context mask has shape {spatial_shape(mask)} (z, y, x) but the probability map has "
            f"{spatial_shape(like)}; resample the mask to the map first",
            source,
        )
    vm, vl = np.asarray(voxel_size_of(mask)), np.asarray(voxel_size_of(like))
    if not np.allclose(vm, vl, rtol=1e-3):
        raise InputError(
            f"context mask has voxel size {tuple(vm)} A but the probability map has {tuple(vl)} A", source
        )
    arr = mask.data
    dtype = np.dtype(arr.dtype)
    if dtype.kind == "b":
        out = arr
    elif dtype.kind in "iu" and probability_scale(dtype, mask.attrs) == 1.0:
        out = arr != 0
    else:
        scale = probability_scale(dtype, mask.attrs)
        out = arr.map_blocks(lambda b: to_probability(b, scale) >= 0.5, dtype=bool)
    return out.rechunk(like.data.chunks[-3:])


def keep_by_context(mode: str, inverse: bool, in_mask: np.ndarray, distance_A: np.ndarray | None,
                    context_distance_A: float | None) -> np.ndarray:
    """Which clusters survive the context filter (intersection already acted on the map)."""
    n = len(in_mask)
    if mode == "intersection":
        return np.ones(n, bool)
    if mode == "contact":
        keep = in_mask > 0
    else:
        if distance_A is None or context_distance_A is None:
            raise InputError("context mode colocalization needs a distance")
        keep = distance_A <= context_distance_A
    return ~keep if inverse else keep


# ----------------------------------------------------------------------------------------------
# distance from points to the region
# ----------------------------------------------------------------------------------------------


def _block_distances(block: np.ndarray, points: np.ndarray, voxel_size, reach_A: float) -> np.ndarray:
    import edt

    if not block.any():
        return np.full(len(points), np.inf)
    d = edt.edt(np.ascontiguousarray(~block), anisotropy=tuple(voxel_size), black_border=False)
    vals = d[tuple(points.T)].astype(np.float64)
    vals[vals > reach_A] = np.inf
    return vals


def distance_to_region(mask: da.Array, points_zyx: np.ndarray, voxel_size: Sequence[float],
                       reach_A: float) -> np.ndarray:
    """Distance (A) from each point's voxel to the nearest ``True`` voxel of ``mask`` (see module doc)."""
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    vs = np.asarray(voxel_size, dtype=np.float64)
    pts = np.asarray(points_zyx, dtype=np.float64).reshape(-1, 3)
    out = np.full(len(pts), np.inf)
    if len(pts) == 0:
        return out
    shape = np.asarray(mask.shape)
    vox = np.clip(np.rint(pts).astype(np.int64), 0, shape - 1)
    halo = int(math.ceil(reach_A / vs.min())) + 1
    ov = with_halo(mask, halo)
    starts = [np.concatenate([[0], np.cumsum(chunks_at_least(c, halo))]) for c in mask.chunks]
    bidx = np.stack([np.searchsorted(starts[a], vox[:, a], side="right") - 1 for a in range(3)], axis=1)
    name = "pick-distance-" + dask.base.tokenize(ov.name, pts, tuple(vs), reach_A)
    dsk, groups = {}, {}
    for b in np.unique(bidx, axis=0):
        sel = np.flatnonzero((bidx == b).all(axis=1))
        lo = np.array([max(0, starts[a][b[a]] - halo) for a in range(3)])
        dsk[(name,) + tuple(int(i) for i in b)] = (_block_distances, (ov.name,) + tuple(int(i) for i in b),
                                                   vox[sel] - lo, tuple(vs), float(reach_A))
        groups[tuple(int(i) for i in b)] = sel
    dsk[name] = (list, list(dsk.keys()))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[ov])
    (values,) = dask.compute(Delayed(name, graph, layer=name))
    for sel, v in zip(groups.values(), values):
        out[sel] = v
    far = ~np.isfinite(out)
    if far.any():
        out[far] = _coarse_distances(mask, vox[far], vs)
    return out


def _coarse_distances(mask: da.Array, vox: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Distances on the mask downsampled (any-pooling) to at most :data:`COARSE_VOXELS` voxels."""
    import edt

    f = max(1, int(math.ceil((np.prod(mask.shape) / COARSE_VOXELS) ** (1 / 3))))
    pad = [(0, (-s) % f) for s in mask.shape]
    m = da.pad(mask, pad, mode="constant", constant_values=False) if any(p[1] for p in pad) else mask
    coarse = da.coarsen(np.any, m, {0: f, 1: f, 2: f}, trim_excess=False).compute() if f > 1 else m.compute()
    if not coarse.any():
        return np.full(len(vox), np.inf)
    d = edt.edt(np.ascontiguousarray(~coarse), anisotropy=tuple(vs * f), black_border=False)
    return d[tuple((vox // f).T)].astype(np.float64)
