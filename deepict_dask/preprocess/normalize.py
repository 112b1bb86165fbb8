"""Zero-mean, unit-variance normalization with global statistics from dask reductions.

The statistics need one pass over the data (computed when :func:`normalize` is called, returning
two numbers); the normalized volume itself stays lazy, so a tomogram larger than memory is read
again chunk by chunk when the result is written.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.progress import compute
from deepict_dask.io.volume import SPATIAL_DIMS


def source_of(volume: xr.DataArray) -> str | None:
    """The file a volume came from (for error messages), if known."""
    src = volume.attrs.get("source")
    return str(src) if src else (str(volume.name) if volume.name else None)


def check_tomogram(volume: xr.DataArray) -> None:
    """Raise :class:`InputError` unless ``volume`` is a 3D (z, y, x) volume with at least 2 voxels per axis."""
    if tuple(volume.dims) != SPATIAL_DIMS:
        raise InputError(f"expected a 3D (z, y, x) tomogram, got dimensions {tuple(volume.dims)}", source_of(volume))
    if min(volume.shape) < 2:
        raise InputError(f"tomogram is too small to filter: shape {tuple(volume.shape)}", source_of(volume))


def volume_stats(volume: xr.DataArray) -> tuple[float, float]:
    """Global mean and standard deviation (float64 accumulation, one pass over the data)."""
    data = volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    data = data.astype(np.float64)
    mean, meansq = compute(data.mean(), (data * data).mean())
    mean, meansq = float(mean), float(meansq)
    var = max(meansq - mean * mean, 0.0)
    return mean, float(np.sqrt(var))


def normalize(volume: xr.DataArray) -> xr.DataArray:
    """``(volume - mean) / std`` as a lazy float32 volume; the statistics go in ``attrs["normalization"]``.

    Raises :class:`InputError` (naming the source file) for NaN/inf values or a constant volume.
    """
    check_tomogram(volume)
    mean, std = volume_stats(volume)
    src = source_of(volume)
    if not np.isfinite(mean) or not np.isfinite(std):
        raise InputError("tomogram contains NaN or infinite values; cannot normalize it", src)
    if std <= 1e-12 * max(1.0, abs(mean)):
        raise InputError(f"tomogram is constant (every voxel is {mean:g}); cannot normalize it", src)
    data = volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    out = ((data.astype(np.float32) - np.float32(mean)) * np.float32(1.0 / std)).astype(np.float32)
    attrs = dict(volume.attrs)
    attrs["normalization"] = {"mean": mean, "std": std}
    return volume.copy(data=out).assign_attrs(attrs)
