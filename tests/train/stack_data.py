"""Tiny synthetic patch stacks for training tests: bright balls (class 1) and slabs (class 2) in noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def synthetic_stack(n: int = 48, size: int = 16, seed: int = 0, slabs: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(patches float32, labels uint8), each (n, size, size, size); even patches a ball, odd a slab
    (``slabs=False``: balls anywhere, every fourth patch empty, so position tells nothing)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size]
    imgs = rng.normal(0, 0.3, (n, size, size, size)).astype(np.float32)
    labs = np.zeros((n, size, size, size), np.uint8)
    c = (size - 1) / 2
    for i in range(n):
        if i % 2 == 0 or not slabs:
            r = rng.uniform(size / 6, size / 4) if slabs else rng.uniform(size / 4, size / 3)
            o = c + (rng.uniform(-size / 3, size / 3, 3) if not slabs else np.zeros(3))
            mask = (z - o[0]) ** 2 + (y - o[1]) ** 2 + (x - o[2]) ** 2 <= r * r
            if not slabs and i % 4 == 3:
                mask[...] = False
            labs[i][mask] = 1
        else:
            ax = [z, y, x][i % 3]
            mask = np.abs(ax - c) <= rng.uniform(1, 2)
            labs[i][mask] = 2
        imgs[i][mask] += 2.0
    return imgs, labs


def write_stack(path: Path, array: np.ndarray, voxel_size: float | None = 10.0, chunk: int = 8) -> Path:
    arr = zarr.create_array(str(path), shape=array.shape, dtype=array.dtype,
                            chunks=(chunk,) + array.shape[1:])
    arr[...] = array
    if voxel_size is not None:
        arr.attrs["voxel_size"] = voxel_size
    return path
