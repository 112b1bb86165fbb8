"""``csv``: the project's own schema with a header row (also ``.txt``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.tables.registry import TableContext, TableFormat, register_format
from deepict_dask.io.tables.schema import ANGSTROM, VOXEL, VoxelSizeNeeded, with_angstrom, with_voxels


def read_csv(path: Path, ctx: TableContext) -> pd.DataFrame:
    """A table with x, y, z and/or x_A, y_A, z_A; the other unit comes from the voxel size if missing."""
    df = pd.read_csv(path, dtype={"tomo": str, "class": str}, keep_default_na=False, na_values=[""],
                     float_precision="round_trip")
    has_vox = all(c in df.columns for c in VOXEL)
    has_ang = all(c in df.columns for c in ANGSTROM)
    if not has_vox and not has_ang:
        raise InputError(
            f"unknown table columns {list(df.columns)}: a coordinate table needs x, y, z (voxels) "
            f"and/or x_A, y_A, z_A (Angstrom), plus tomo and class",
            path,
        )
    if not (has_vox and has_ang):
        if ctx.voxel_size is None:
            have = "voxel" if has_vox else "Angstrom"
            raise VoxelSizeNeeded(f"table has only {have} coordinates; give the voxel size to derive the others", path)
        df = with_angstrom(df, ctx.voxel_size) if has_vox else with_voxels(df, ctx.voxel_size)
    for col, default in (("tomo", path.stem), ("class", "particle")):
        if col not in df.columns:
            df[col] = default
    return df


def write_csv(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    """The schema as it is: no float_format, so pandas writes the shortest repr and numbers round-trip."""
    df.to_csv(out, index=False)


CSV = register_format(TableFormat(
    name="csv", suffixes=(".csv", ".txt"), read=read_csv, write=write_csv,
    description="the project's schema with a header row", uses=frozenset({"voxel_size"}),
))
