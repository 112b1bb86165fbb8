"""``motl``: DeePiCt / TOM motive list: CSV without header, 20 columns, 0-based voxel coordinates in
columns 8-10, score in column 1, class number in column 20; one tomogram per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.tables.registry import TableContext, TableFormat, register_format
from deepict_dask.io.tables.schema import VoxelSizeNeeded, make_table


def looks_like_motl(path: Path) -> bool:
    """A ``.csv``/``.txt`` file whose first line is 20 numbers: a motive list, not the project's schema."""
    if path.suffix.lower() not in (".csv", ".txt") or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    fields = first.strip().split(",")
    if len(fields) != 20:
        return False
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def read_motl(path: Path, ctx: TableContext) -> pd.DataFrame:
    """A motive list; voxel size, tomogram name and class names come from the context."""
    if ctx.voxel_size is None:
        raise VoxelSizeNeeded("motive lists record no voxel size; give the voxel size", path)
    raw = pd.read_csv(path, header=None, float_precision="round_trip")
    if raw.shape[1] != 20:
        raise InputError(f"a motive list has 20 columns, this file has {raw.shape[1]}", path)
    m = raw.to_numpy(dtype=np.float64)
    names = ctx.class_names or {}
    classes = [names.get(int(c), str(int(c))) for c in m[:, 19]]
    df = make_table(ctx.tomo or path.stem, classes, xyz=m[:, 7:10], voxel_size=ctx.voxel_size, score=m[:, 0])
    if np.any(m[:, 16:19] != 0):
        df["phi"], df["psi"], df["theta"] = m[:, 16], m[:, 17], m[:, 18]
    return df


def write_motl(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    """Class numbers from the context's ``class_ids`` (default: 1, 2, ... in name order)."""
    class_ids = ctx.class_ids
    if class_ids is None:
        class_ids = {c: i + 1 for i, c in enumerate(sorted(df["class"].unique()))}
    n = len(df)
    m = np.zeros((n, 20), dtype=np.float64)
    m[:, 0] = df["score"].to_numpy() if "score" in df.columns else 0.0
    m[:, 1], m[:, 2] = df["x"].to_numpy(), df["y"].to_numpy()
    m[:, 3] = np.arange(1, n + 1)
    m[:, 7], m[:, 8], m[:, 9] = df["x"].to_numpy(), df["y"].to_numpy(), df["z"].to_numpy()
    if all(c in df.columns for c in ("phi", "theta", "psi")):
        m[:, 16], m[:, 17], m[:, 18] = df["phi"].to_numpy(), df["psi"].to_numpy(), df["theta"].to_numpy()
    try:
        m[:, 19] = [class_ids[c] for c in df["class"]]
    except KeyError as exc:
        raise InputError(f"class {exc} has no number in class_ids", target) from exc
    # repr-exact numbers, no header: the layout DeePiCt reads.
    pd.DataFrame(m).to_csv(out, index=False, header=False)


MOTL = register_format(TableFormat(
    name="motl", suffixes=(".motl",), read=read_motl, write=write_motl,
    description="DeePiCt / TOM motive list (CSV without header), one tomogram",
    uses=frozenset({"voxel_size", "tomo", "class_names", "class_ids"}), many_tomograms=False,
    detect=looks_like_motl,
))
