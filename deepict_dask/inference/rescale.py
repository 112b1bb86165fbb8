"""Bring a tomogram to the model's voxel size on the fly, and predictions back to the tomogram's.

Linear interpolation, chunked by ``dask_image`` (each output chunk reads only the input region it
maps to); voxel centres are aligned at the origin. Before shrinking (tomogram finer than the
model) a Gaussian removes frequencies the coarser grid cannot hold, as ``skimage.transform``
does for downscaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np


def needs_rescale(factors: Sequence[float]) -> bool:
    return any(abs(f - 1.0) > 1e-9 for f in factors)


def rescaled_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, ...]:
    """Shape on the model grid: ``factors`` are tomogram voxel size / model voxel size."""
    return tuple(max(1, int(round(n * f))) for n, f in zip(shape, factors))


def _resample(arr: da.Array, step: Sequence[float], shape: Sequence[int], chunks: Sequence[int]) -> da.Array:
    from dask_image.ndinterp import affine_transform

    out_chunks = tuple(min(c, n) for c, n in zip(chunks, shape))
    return affine_transform(
        arr, np.asarray(step, dtype=float), offset=0.0, output_shape=tuple(shape), order=1,
        output_chunks=out_chunks, mode="nearest",
    )


def to_model_grid(x: da.Array, factors: Sequence[float], chunks: Sequence[int]) -> da.Array:
    """Resample a float32 ZYX array from the tomogram grid to the model grid."""
    step = [1.0 / f for f in factors]  # input voxels per output voxel
    sigma = [max(s - 1.0, 0.0) / 2.0 for s in step]
    if any(s > 0 for s in sigma):
        from dask_image.ndfilters import gaussian_filter

        x = gaussian_filter(x, sigma=sigma, mode="nearest")
    return _resample(x, step, rescaled_shape(x.shape, factors), chunks).astype(np.float32)


def to_tomogram_grid(p: da.Array, factors: Sequence[float], shape: Sequence[int], chunks: Sequence[int]) -> da.Array:
    """Resample a float32 ``(c, z, y, x)`` prediction from the model grid back to ``shape``."""
    channels = [_resample(p[c], list(factors), shape, chunks) for c in range(p.shape[0])]
    return da.stack(channels).astype(np.float32)
