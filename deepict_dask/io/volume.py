"""Volumes as dask-backed ``xarray.DataArray`` objects whose coordinates carry Angstrom.

This is the one currency between stages: dims are always ``("z", "y", "x")`` (or
``("c", "z", "y", "x")`` for multi-channel maps), each spatial coordinate holds the position of the
voxel centres in Angstrom (``origin + index * voxel_size``), and ``attrs`` hold at least
``voxel_size`` (a ``(z, y, x)`` tuple in Angstrom) and ``source`` (the file it came from, if any).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError, VoxelSizeUnset

SPATIAL_DIMS = ("z", "y", "x")


def as_voxel_size(voxel_size: float | Sequence[float]) -> tuple[float, float, float]:
    """Normalise a scalar or per-axis (z, y, x) voxel size to a tuple of three floats."""
    if np.isscalar(voxel_size):
        vs = (float(voxel_size),) * 3
    else:
        vs = tuple(float(v) for v in voxel_size)
        if len(vs) != 3:
            raise ValueError(f"voxel size needs 1 or 3 values (z, y, x), got {len(vs)}")
    return vs  # type: ignore[return-value]


def checked_voxel_size(
    voxel: tuple[float, float, float], override: float | Sequence[float] | None, where: Any,
    found_in: str = "the header",
) -> tuple[float, float, float]:
    """The explicit voxel size when one is given, else the file's; refuse 0, NaN or negative sizes.

    An unset voxel size used to become 1 A, and prediction then rescaled the tomogram by ~13x and
    returned a meaningless map: better to stop and ask for ``--voxel-size``.
    """
    if override is not None:
        vs = as_voxel_size(override)
        if not all(np.isfinite(v) and v > 0 for v in vs):
            raise InputError(f"the voxel size given must be positive, got {override}", where)
        return vs
    bad = [v for v in voxel if not (np.isfinite(v) and v > 0)]
    if bad:
        raise VoxelSizeUnset(f"voxel size is {bad[0]:g} Å in {found_in}; give voxel_size (on the command line --voxel-size: convert, predict; "
                             "for other commands write a copy that records it: deepict convert --voxel-size A)", where)
    return voxel


def make_volume(
    data: Any,
    voxel_size: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    name: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    chunks: Any = None,
) -> xr.DataArray:
    """Wrap a 3D (ZYX) or 4D (CZYX) array as a dask-backed DataArray with Angstrom coordinates.

    ``data`` may be a numpy or dask array; numpy input is chunked with ``chunks`` (default: dask's
    automatic chunking).
    """
    vs = as_voxel_size(voxel_size)
    arr = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=chunks or "auto")
    if chunks is not None and isinstance(data, da.Array):
        arr = arr.rechunk(chunks)
    if arr.ndim == 3:
        dims: tuple[str, ...] = SPATIAL_DIMS
    elif arr.ndim == 4:
        dims = ("c",) + SPATIAL_DIMS
    else:
        raise ValueError(f"expected a 3D (z, y, x) or 4D (c, z, y, x) array, got {arr.ndim} dimensions")
    shape = arr.shape[-3:]
    coords: dict[str, Any] = {
        dim: float(o) + np.arange(n, dtype=np.float64) * v for dim, n, v, o in zip(SPATIAL_DIMS, shape, vs, origin)
    }
    if arr.ndim == 4:
        coords["c"] = list(channels) if channels is not None else [str(i) for i in range(arr.shape[0])]
    all_attrs = {"voxel_size": vs, "origin": tuple(float(o) for o in origin)}
    if attrs:
        all_attrs.update(attrs)
    for dim in SPATIAL_DIMS:
        coords[dim] = xr.Variable(dim, coords[dim], attrs={"units": "angstrom"})
    return xr.DataArray(arr, dims=dims, coords=coords, name=name, attrs=all_attrs)


def voxel_size_of(volume: xr.DataArray) -> tuple[float, float, float]:
    """The (z, y, x) voxel size in Angstrom of a volume made by :func:`make_volume`."""
    if "voxel_size" in volume.attrs:
        return as_voxel_size(volume.attrs["voxel_size"])
    steps = []
    for dim in SPATIAL_DIMS:
        c = np.asarray(volume[dim].values)
        steps.append(float(c[1] - c[0]) if c.size > 1 else 1.0)
    return tuple(steps)  # type: ignore[return-value]


def origin_of(volume: xr.DataArray) -> tuple[float, float, float]:
    """The (z, y, x) position in Angstrom of voxel (0, 0, 0)."""
    return tuple(float(volume[d].values[0]) for d in SPATIAL_DIMS)  # type: ignore[return-value]


def spatial_shape(volume: xr.DataArray) -> tuple[int, int, int]:
    return tuple(int(volume.sizes[d]) for d in SPATIAL_DIMS)  # type: ignore[return-value]


def stored_source(arr: da.Array) -> Any | None:
    """The array-like that ``arr`` reads from, when ``arr`` is exactly ``da.from_array``/``from_zarr`` of it.

    Lets a task read any region straight from the file (MRC memmap, Zarr array) instead of
    depending on whole chunk tasks, which Dask would keep in memory until every reader is done.
    Returns ``None`` for any derived array (astype, rechunk, arithmetic...).
    """
    graph = arr.__dask_graph__()
    layers = getattr(graph, "layers", None)
    original = f"original-{arr.name}"
    if layers is None or set(layers) != {original, arr.name} or len(layers[original]) != 1:
        return None
    (source,) = layers[original].values()
    if not hasattr(source, "__getitem__") or tuple(getattr(source, "shape", ())) != tuple(arr.shape):
        return None
    if np.dtype(getattr(source, "dtype", object)) != arr.dtype:
        return None
    return source
