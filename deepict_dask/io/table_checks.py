"""Sanity checks of coordinate tables against a volume: units that disagree, points outside.

One place for the checks ``deepict labels``, ``table`` and ``evaluate`` make before they use a
table, so a table whose voxel columns hold Angstrom (or the reverse) is caught with numbers
instead of silently painting or matching nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.volume import as_voxel_size

log = logging.getLogger(__name__)

#: x_A / x may differ from the voxel size by this fraction before the columns count as disagreeing
UNIT_TOLERANCE = 0.02


def implied_voxel_size(df: pd.DataFrame) -> tuple[float, float, float] | None:
    """The (z, y, x) voxel size the table's own x/x_A columns imply, or None if they cannot say."""
    from deepict_dask.io.tables import voxel_size_from_table

    cols = ["x", "y", "z", "x_A", "y_A", "z_A"]
    if not all(c in df.columns for c in cols):
        return None
    rows = df[np.isfinite(df[cols].to_numpy(dtype=np.float64)).all(axis=1)]
    return voxel_size_from_table(rows) if len(rows) > 1 else None


def check_units(df: pd.DataFrame, voxel_size: float | Sequence[float], path: str | os.PathLike | None = None) -> None:
    """Refuse a table whose ``x`` and ``x_A`` columns disagree with ``voxel_size`` (Angstrom)."""
    implied = implied_voxel_size(df)
    if implied is None:
        return
    expected = as_voxel_size(voxel_size)
    for axis, got, want in zip("zyx", implied, expected):
        factor = got / want
        if abs(factor - 1.0) > UNIT_TOLERANCE:
            hint = "are the voxel columns in Angstrom?" if factor < 1 else "are the Angstrom columns in voxels?"
            raise InputError(
                f"{axis} and {axis}_A disagree by {max(factor, 1 / factor):.1f}x: {axis}_A/{axis} implies a voxel "
                f"size of {got:.4g} A, the voxel size is {want:.4g} A; {hint}",
                path,
            )


def inside_volume(df: pd.DataFrame, shape: Sequence[int]) -> np.ndarray:
    """Boolean mask of rows whose voxel centre lies in a volume of ``shape`` (z, y, x)."""
    xyz = df[["x", "y", "z"]].to_numpy(dtype=np.float64).reshape(-1, 3)
    hi = np.asarray(shape, dtype=np.float64)[::-1] - 0.5
    return np.all((xyz >= -0.5) & (xyz < hi), axis=1)


def outside_message(df: pd.DataFrame, shape: Sequence[int], examples: int = 3) -> str | None:
    """A sentence counting (with examples) the rows outside the volume, or None if all are inside."""
    inside = inside_volume(df, shape)
    if inside.all():
        return None
    out = df.loc[~inside, ["x", "y", "z"]].to_numpy(dtype=np.float64)[:examples]
    shown = ", ".join(f"({x:.1f}, {y:.1f}, {z:.1f})" for x, y, z in out)
    z, y, x = (int(s) for s in shape)
    return (f"{int((~inside).sum())} of {len(df)} particles lie outside the volume of x,y,z = {x}x{y}x{z} voxels, "
            f"e.g. x,y,z = {shown}")


def check_table(
    df: pd.DataFrame,
    *,
    voxel_size: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    path: str | os.PathLike | None = None,
    require_inside: bool = False,
) -> np.ndarray:
    """Check units (refuse) and extent (warn; refuse if none is inside and ``require_inside``).

    Returns the mask of rows inside the volume (all True without ``shape``).
    """
    if voxel_size is not None:
        check_units(df, voxel_size, path)
    if shape is None or not len(df):
        return np.ones(len(df), dtype=bool)
    inside = inside_volume(df, shape)
    msg = outside_message(df, shape)
    if msg is not None:
        where = f"{path}: " if path is not None else ""
        if require_inside and not inside.any():
            raise InputError(f"none of the particles is inside the volume: {msg}", path)
        log.warning("%s%s", where, msg)
    return inside
