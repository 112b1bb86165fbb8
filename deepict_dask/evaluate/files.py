"""Reading the inputs of evaluation: coordinate tables and volumes, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError


def load_table(path: str | os.PathLike, *, voxel_size: Any = None, voxels_only: bool = False) -> pd.DataFrame:
    """A coordinate table in the project schema (any format :mod:`deepict_dask.io.tables` reads).

    ``voxels_only``: matching in voxels needs no voxel size, so a voxel table that records none is
    read with empty (NaN) Angstrom columns instead of refused. With ``voxel_size`` the table's
    x/y/z and x_A/y_A/z_A columns must agree with it.
    """
    from deepict_dask.io.table_checks import check_units
    from deepict_dask.io.tables import read_table

    df = read_table(path, voxel_size=voxel_size, angstrom_optional=voxels_only)
    if voxel_size is not None:
        check_units(df, voxel_size, path)
    return df


def load_volume(path: str | os.PathLike, *, group: str | None = None, level: int = 0) -> xr.DataArray:
    """A lazily chunked volume (MRC, Zarr, OME-Zarr) as a DataArray with dims (c,) z, y, x."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path)
    from deepict_dask.io import open_volume

    return open_volume(path, level=level, group=group)


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write metrics as indented JSON, atomically (NaN becomes null)."""
    import json

    from deepict_dask.io.atomic import atomic_path

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, float) and v != v:
            return None
        return v

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(data), indent=2) + "\n")
    return path
