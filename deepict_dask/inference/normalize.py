"""Whole-tomogram normalization: one global mean and standard deviation, never per block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError


def _stored_stats(volume: xr.DataArray) -> tuple[float, float] | None:
    """Mean/std saved by ``write_ome_zarr`` for pyramid level 0 (saves a pass over the data)."""
    stats = volume.attrs.get("stats")
    if not isinstance(stats, Mapping) or volume.attrs.get("level", 0) != 0:
        return None
    try:
        mean, std, bad = float(stats["mean"]), float(stats["std"]), int(stats.get("nonfinite", 0))
    except (KeyError, TypeError, ValueError):
        return None
    if bad:
        return np.nan, np.nan
    return mean, std


def global_stats(volume: xr.DataArray | da.Array, *, source: Any = None) -> tuple[float, float]:
    """Mean and standard deviation of the whole volume (float64, one dask reduction).

    NaN or infinite voxels, and constant volumes, are an :class:`InputError`.
    """
    stats = _stored_stats(volume) if isinstance(volume, xr.DataArray) else None
    arr = volume.data if isinstance(volume, xr.DataArray) else volume
    if source is None and isinstance(volume, xr.DataArray):
        source = volume.attrs.get("source")
    if stats is None:
        from deepict_dask.io.progress import compute

        f = arr.astype(np.float64)
        mean, sq = compute(f.mean(), (f * f).mean())
        mean, sq = float(mean), float(sq)
        stats = mean, float(np.sqrt(max(sq - mean * mean, 0.0))) if np.isfinite(sq) else np.nan
    mean, std = stats
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise InputError("tomogram contains NaN or infinite voxels; fix or mask them before predicting", source)
    if std <= 0:
        raise InputError("tomogram is constant (standard deviation 0); nothing to predict on", source)
    return mean, std


def zscore(arr: da.Array, mean: float, std: float) -> da.Array:
    """``(arr - mean) / std`` in float32, lazily."""
    return ((arr.astype(np.float32) - np.float32(mean)) * np.float32(1.0 / std)).astype(np.float32)
