"""Zero-mean, unit-variance normalization with global statistics from dask reductions.

The statistics need one pass over the data (computed when :func:`normalize` is called, returning
two numbers); the normalized volume itself stays lazy, so a tomogram larger than memory is read
again chunk by chunk when the result is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def _stored_stats(volume: xr.DataArray) -> tuple[float, float] | None:
    """Mean/std that ``write_ome_zarr`` saved for pyramid level 0 (saves a pass over the data)."""
    stats = volume.attrs.get("stats")
    if not isinstance(stats, Mapping) or volume.attrs.get("level", 0) != 0:
        return None
    try:
        mean, std, bad = float(stats["mean"]), float(stats["std"]), int(stats.get("nonfinite", 0))
    except (KeyError, TypeError, ValueError):
        return None
    return (np.nan, np.nan) if bad else (mean, std)


def volume_stats(volume: xr.DataArray | da.Array) -> tuple[float, float]:
    """Global mean and standard deviation (float64 accumulation, one pass over the data).

    Uses the statistics stored with an OME-Zarr image when present.
    """
    stored = _stored_stats(volume) if isinstance(volume, xr.DataArray) else None
    if stored is not None:
        return stored
    from deepict_dask.io.zarr_store import block_stats, summarise_stats

    arr = volume.data if isinstance(volume, xr.DataArray) else volume
    data = arr if isinstance(arr, da.Array) else da.from_array(np.asarray(arr))
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    stats = summarise_stats(compute(block_stats(data))[0])
    if stats["nonfinite"] or not np.isfinite(stats["mean"]):
        return np.nan, np.nan
    return stats["mean"], stats["std"]


def checked_stats(volume: xr.DataArray | da.Array, source: Any = None) -> tuple[float, float]:
    """:func:`volume_stats`, refusing NaN/inf voxels and constant volumes with an :class:`InputError`."""
    if source is None and isinstance(volume, xr.DataArray):
        source = source_of(volume)
    mean, std = volume_stats(volume)
    if not np.isfinite(mean) or not np.isfinite(std):
        raise InputError("tomogram contains NaN or infinite values; fix or mask them first", source)
    if std <= 1e-12 * max(1.0, abs(mean)):
        raise InputError(f"tomogram is constant (every voxel is {mean:g}); nothing to normalize", source)
    return mean, std


def zscore(arr: da.Array, mean: float, std: float) -> da.Array:
    """``(arr - mean) / std`` in float32, lazily."""
    return ((arr.astype(np.float32) - np.float32(mean)) * np.float32(1.0 / std)).astype(np.float32)


def normalize(volume: xr.DataArray) -> xr.DataArray:
    """``(volume - mean) / std`` as a lazy float32 volume; the statistics go in ``attrs["normalization"]``.

    Raises :class:`InputError` (naming the source file) for NaN/inf values or a constant volume.
    """
    check_tomogram(volume)
    mean, std = checked_stats(volume)
    data = volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    out = zscore(data, mean, std)
    attrs = dict(volume.attrs)
    attrs["normalization"] = {"mean": mean, "std": std}
    return volume.copy(data=out).assign_attrs(attrs)
