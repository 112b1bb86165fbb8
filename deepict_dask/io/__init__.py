"""Tomogram I/O: MRC and (OME-)Zarr in, OME-Zarr and MRC out, always lazily and chunk by chunk.

Public API (volumes are dask-backed ``xarray.DataArray`` objects, see :mod:`deepict_dask.io.volume`):

- :func:`open_volume` reads ``.mrc/.mrcs/.rec/.map/.st/.ali``, plain Zarr v2/v3 arrays and OME-Zarr
  images (NGFF 0.4/0.5; pick a sub-image with ``group`` and a pyramid level with ``level``).
- :func:`write_ome_zarr` writes a multiscale OME-Zarr image (or a label image), atomically.
- :func:`write_mrc` writes an MRC file chunk by chunk, atomically.
- :func:`read_mrc_header` checks an MRC header; :func:`count_nonfinite` counts NaN/inf voxels.
- :func:`convert` with :class:`ConvertOptions` converts a tomogram file (``deepict convert``).
- Coordinate tables (read, write, formats) are :mod:`deepict_dask.io.tables`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.convert import ConvertOptions, convert
from deepict_dask.io.mrc import MRC_SUFFIXES, MrcHeader, open_mrc, read_mrc_header, write_mrc
from deepict_dask.io.progress import compute, show_progress
from deepict_dask.io.volume import (
    make_volume,
    origin_of,
    spatial_shape,
    voxel_size_of,
)
from deepict_dask.io.zarr_store import open_zarr, write_ome_zarr

__all__ = [
    "MRC_SUFFIXES",
    "ConvertOptions",
    "MrcHeader",
    "compute",
    "convert",
    "count_nonfinite",
    "is_zarr_path",
    "make_volume",
    "open_volume",
    "origin_of",
    "read_mrc_header",
    "show_progress",
    "spatial_shape",
    "tomogram_name",
    "voxel_size_of",
    "write_mrc",
    "write_ome_zarr",
]


TOMOGRAM_SUFFIXES = (".ome.zarr", ".zarr", *MRC_SUFFIXES)


def tomogram_name(path: str | os.PathLike) -> str:
    """A tomogram's name from its file name: ``TS_01.rec`` -> ``TS_01``, ``a.ome.zarr/`` -> ``a``.

    Every output and table row of a tomogram is named by this, so that files match up.
    """
    name = Path(str(path).rstrip("/")).name
    for suffix in TOMOGRAM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_zarr_path(path: str | os.PathLike) -> bool:
    """A directory holding Zarr metadata, or a name ending in ``.zarr``."""
    p = Path(path)
    if p.name.endswith(".zarr"):
        return True
    return p.is_dir() and any((p / m).is_file() for m in ("zarr.json", ".zgroup", ".zarray"))


def open_volume(
    path: str | os.PathLike, chunks: Any = None, *, level: int = 0, group: str | None = None,
    allow_2d: bool = False, voxel_size: float | tuple[float, float, float] | None = None,
) -> xr.DataArray:
    """Open a tomogram lazily as a ZYX (or CZYX) volume, never loading it into memory.

    ``chunks``: dask chunks (default: 128 per axis for MRC, the stored chunks for Zarr; an int
    applies to the spatial axes). ``group``/``level`` choose a sub-image and pyramid level of an
    OME-Zarr store. MRC headers are read permissively; missing, corrupt, truncated, 2D (unless
    ``allow_2d``) or unsupported inputs raise :class:`~deepict_dask.errors.InputError`.
    Attributes: ``voxel_size`` (z, y, x Angstrom), ``origin``, ``source``, ``format`` and the MRC
    header fields (``mrc_header``) or stored ``deepict`` metadata. ``voxel_size`` (Angstrom, one value
    or z, y, x) replaces the file's; without it a voxel size of 0, NaN or below is an InputError.

    Parameters
    ----------
    path : path
        An MRC file or a Zarr / OME-Zarr directory.
    chunks : optional
        Dask chunks (see above).
    level : int
        Pyramid level of an OME-Zarr image.
    group : str, optional
        Sub-image of an OME-Zarr store (e.g. ``predictions/<model>``).
    allow_2d : bool
        Accept a single image.
    voxel_size : float or (float, float, float), optional
        Angstrom per voxel, replacing the file's.

    Returns
    -------
    DataArray
        The lazy (dask-backed) volume with dims ``z, y, x`` (or ``c, z, y, x``).
    """
    p = Path(path)
    if is_zarr_path(p):
        return open_zarr(p, chunks, level=level, group=group, voxel_size=voxel_size)
    if p.suffix.lower() in MRC_SUFFIXES:
        if group is not None or level != 0:
            raise InputError("an MRC file has no groups or pyramid levels", p)
        return open_mrc(p, chunks, allow_2d=allow_2d, voxel_size=voxel_size)
    if not p.exists():
        raise InputError("no such file or directory", p)
    raise InputError(
        f"unsupported file type {p.suffix or '(no extension)'!r}; expected an MRC file "
        f"({', '.join(MRC_SUFFIXES)}) or a Zarr/OME-Zarr directory",
        p,
    )


def count_nonfinite(volume: xr.DataArray | da.Array) -> int:
    """Number of NaN or infinite voxels, computed chunk by chunk (0 for integer data)."""
    arr = volume.data if isinstance(volume, xr.DataArray) else volume
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating)):
        return 0
    (n,) = compute((~da.isfinite(arr)).sum())
    return int(n)
