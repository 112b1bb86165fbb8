"""2x downsampling for multiscale pyramids: block mean for images, striding for label images.

Each level is computed from the level below, read back from disk: one task makes one output chunk
by reading the 2x2x2 input regions under it one at a time (each about one stored chunk), so a task
holds about three chunks whatever the volume size. Odd sizes round up (``ceil(n / 2)``); the last voxel of an odd axis is the mean of
the voxels that exist.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import dask.array as da
import numpy as np


def level_shape(shape: tuple[int, ...], spatial_axes: int = 3) -> tuple[int, ...]:
    """Shape one level down: spatial axes (the last ``spatial_axes``) halved, rounded up."""
    lead = len(shape) - spatial_axes
    return tuple(shape[:lead]) + tuple(math.ceil(n / 2) for n in shape[lead:])


def mean2(block: np.ndarray, spatial_axes: int = 3) -> np.ndarray:
    """Mean over 2x2x2 neighbourhoods of the last three axes (partial neighbourhoods at odd edges)."""
    lead = block.ndim - spatial_axes
    work = block.astype(np.float64 if block.dtype.itemsize > 4 else np.float32, copy=False)
    pad = [(0, 0)] * lead + [(0, n % 2) for n in block.shape[lead:]]
    if any(p[1] for p in pad):
        work = np.pad(work, pad)
    new_shape: list[int] = list(work.shape[:lead])
    for n in work.shape[lead:]:
        new_shape += [n // 2, 2]
    summed = work.reshape(new_shape).sum(axis=tuple(lead + 2 * i + 1 for i in range(spatial_axes)))
    count = np.ones((1,) * lead, dtype=work.dtype)
    for n in block.shape[lead:]:
        per_axis = np.full(math.ceil(n / 2), 2, dtype=work.dtype)
        if n % 2:
            per_axis[-1] = 1
        count = np.multiply.outer(count, per_axis)
    out = summed / count
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(block.dtype)
    return out.astype(block.dtype, copy=False)


def stride2(block: np.ndarray, spatial_axes: int = 3) -> np.ndarray:
    """Nearest-neighbour 2x downsampling (every other voxel): keeps label values exact."""
    lead = block.ndim - spatial_axes
    return np.ascontiguousarray(block[(slice(None),) * lead + (slice(None, None, 2),) * spatial_axes])


def _pieces(start: int, stop: int, n_in: int) -> list[tuple[int, int, int, int]]:
    """Split output range [start, stop) in two halves; (out_a, out_b, in_a, in_b) per half."""
    half = max(1, math.ceil((stop - start) / 2))
    cuts = sorted({start, min(start + half, stop), stop})
    return [(a, b, 2 * a, min(2 * b, n_in)) for a, b in zip(cuts[:-1], cuts[1:])]


def _downsample_block(source: Any, label: bool, block_info: dict | None = None) -> np.ndarray:
    info = block_info[None]
    loc = info["array-location"]
    out = np.empty(info["chunk-shape"], dtype=source.dtype)
    lead = source.ndim - 3
    axes = [[(a, b, a, b)] for a, b in loc[:lead]] + [
        _pieces(a, b, n) for (a, b), n in zip(loc[lead:], source.shape[lead:])
    ]
    fn = stride2 if label else mean2
    for combo in itertools.product(*axes):
        block = np.asarray(source[tuple(slice(p[2], p[3]) for p in combo)])
        dst = tuple(slice(p[0] - l0, p[1] - l0) for p, (l0, _) in zip(combo, loc))
        out[dst] = fn(block)
    return out


def downsample(source: Any, chunks: tuple[int, ...], *, label: bool = False) -> da.Array:
    """Lazy 2x downsampling of an array-like (a Zarr array) along its last three axes.

    ``chunks`` are the output chunks (the stored chunks of the next level). Images use the 2x2x2 mean
    (:func:`mean2`), label images every other voxel (:func:`stride2`).
    """
    shape = level_shape(tuple(source.shape))
    return da.map_blocks(
        _downsample_block, source=source, label=label, chunks=da.core.normalize_chunks(chunks, shape),
        dtype=source.dtype, meta=np.empty((0,) * len(shape), dtype=source.dtype),
    )
