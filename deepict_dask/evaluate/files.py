"""Reading the inputs of evaluation: coordinate tables and volumes, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def load_tables(paths: Sequence[str | os.PathLike], voxel_size: Any = None, unit: str = "A") -> pd.DataFrame:
    """Read and stack coordinate tables; with a voxel ``unit`` no voxel size is needed.

    Parameters
    ----------
    paths
        Tables in any format :mod:`deepict_dask.io.tables` reads.
    voxel_size
        Angstrom, for tables that do not record it (checked against those that do).
    unit
        ``vox`` when matching will be in voxels (tables without Angstrom columns are then accepted), else ``A``.

    Returns
    -------
    pandas.DataFrame
        All rows in the project schema.
    """
    frames = [load_table(p, voxel_size=voxel_size, voxels_only=unit == "vox") for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def check_same_units(pred: pd.DataFrame, truth: pd.DataFrame, pred_paths: Sequence[Any],
                     truth_paths: Sequence[Any]) -> float | None:
    """Warn when the two sides' x/x_A columns imply voxel sizes more than 2% apart (numbers given).

    Returns the factor between them (``None`` when a side records no Angstrom columns), so a caller
    can act on it; the warning goes to the log because the comparison may still be meant.
    """
    import logging

    from deepict_dask.io.table_checks import UNIT_TOLERANCE, implied_voxel_size

    a, b = implied_voxel_size(pred), implied_voxel_size(truth)
    if a is None or b is None:
        return None
    factor = max(max(x / y for x, y in zip(a, b)), max(y / x for x, y in zip(a, b)))
    if factor - 1.0 > UNIT_TOLERANCE:
        logging.getLogger(__name__).warning(
            "the predicted and true tables disagree on the voxel size by %.1fx (x_A/x implies %s A in %s, %s A in "
            "%s): are the voxel columns of one of them in Angstrom?", factor, f"{a[2]:.4g}",
            ", ".join(map(str, pred_paths)), f"{b[2]:.4g}", ", ".join(map(str, truth_paths)))
    return factor


def existing(path: str | os.PathLike) -> str | os.PathLike:
    """``path`` if it exists, else one :class:`InputError` naming it."""
    if not Path(path).exists():
        raise InputError("no such file or directory", path)
    return path


def open_prediction(path: str | os.PathLike, group: str | None = None) -> xr.DataArray:
    """A probability map: a ``deepict predict`` store's ``predictions/<model>`` (not the tomogram at its
    root), an MRC or a Zarr array."""
    from deepict_dask.pick.api import open_map

    return open_map(existing(path), group=group)
