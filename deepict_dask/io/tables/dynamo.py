"""``tbl``: Dynamo table, plain text, one particle per line, at least 26 numeric columns.

Dynamo's column numbers (1-based, as its documentation counts them) of what is read and written:
1 tag, 2 aligned, 3 averaged, 4-6 dx dy dz (shift, pixels), 7-9 tdrot tilt narot (degrees),
10 cc (score), 13 ftype, 20 tomo (number), 22 class (number), 24-26 x y z (pixels); 35 columns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io import orientation
from deepict_dask.io.tables.registry import TableContext, TableFormat, register_format
from deepict_dask.io.tables.schema import VOXEL, VoxelSizeNeeded, make_table

log = logging.getLogger(__name__)

_TBL = {"tag": 1, "aligned": 2, "averaged": 3, "dx": 4, "tdrot": 7, "cc": 10, "tomo": 20, "class": 22, "x": 24}
_TBL_COLUMNS = 35
_TBL_MIN_COLUMNS = 26


def read_dynamo(path: Path, ctx: TableContext) -> pd.DataFrame:
    """Dynamo ``.tbl``: position ``x + dx`` etc. in pixels counted from 1 (MATLAB), so minus 1 here.

    Tomograms and classes are numbers in Dynamo; the context's ``tomo`` names a file's only tomogram
    and ``class_names`` maps class numbers to names (otherwise the numbers become the names).
    """
    if ctx.voxel_size is None:
        raise VoxelSizeNeeded("Dynamo tables record no voxel size; give the voxel size", path)
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"a Dynamo table holds only numbers, {_TBL_MIN_COLUMNS} columns at least ({exc})",
                         path) from exc
    if m.size and m.shape[1] < _TBL_MIN_COLUMNS:
        raise InputError(f"a Dynamo table has at least {_TBL_MIN_COLUMNS} columns (x, y, z are 24-26), "
                         f"this file has {m.shape[1]}", path)
    m = m.reshape(-1, max(m.shape[1], _TBL_MIN_COLUMNS))

    def col(name: str, width: int = 1) -> np.ndarray:
        i = _TBL[name] - 1
        return m[:, i : i + width]

    tomo = ctx.tomo
    tomo_ids = col("tomo")[:, 0].astype(int)
    if tomo is not None and len(set(tomo_ids)) > 1:
        raise InputError(f"the table holds {len(set(tomo_ids))} tomograms (numbers {sorted(set(tomo_ids))}); "
                         f"--tomo can name only one", path)
    names = [tomo if tomo is not None else str(t) for t in tomo_ids]
    cls_names = ctx.class_names or {}
    classes = [cls_names.get(int(c), str(int(c))) for c in col("class")[:, 0]]
    xyz = col("x", 3) + col("dx", 3) - 1.0
    df = make_table(names, classes, xyz=xyz, voxel_size=ctx.voxel_size, score=col("cc")[:, 0])
    angles = col("tdrot", 3)
    if np.any(angles != 0):
        orientation.set_rotations(df, orientation.rotations_from_dynamo(angles))
    return df


def write_dynamo(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    """Dynamo ``.tbl``, 35 columns: positions as x, y, z counted from 1 (no shifts), angles as
    ``tdrot, tilt, narot`` (see :mod:`deepict_dask.io.orientation`), score as cc, tomograms and
    classes numbered (classes by the context's ``class_ids`` if given)."""
    class_ids = ctx.class_ids
    if class_ids is None:
        class_ids = _numbers(df["class"], "class", target)
    tomo_ids = _numbers(df["tomo"], "tomogram", target)
    n = len(df)
    m = np.zeros((n, _TBL_COLUMNS), dtype=np.float64)
    m[:, _TBL["tag"] - 1] = np.arange(1, n + 1)
    m[:, _TBL["aligned"] - 1] = m[:, _TBL["averaged"] - 1] = 1
    i = _TBL["x"] - 1
    m[:, i : i + 3] = df[VOXEL].to_numpy(dtype=np.float64) + 1.0
    if orientation.has_angles(df):
        i = _TBL["tdrot"] - 1
        m[:, i : i + 3] = orientation.dynamo_from_table(df)
    if "score" in df.columns:
        m[:, _TBL["cc"] - 1] = df["score"].to_numpy(dtype=np.float64)
    m[:, _TBL["tomo"] - 1] = [tomo_ids[t] for t in df["tomo"]]
    try:
        m[:, _TBL["class"] - 1] = [class_ids[c] for c in df["class"]]
    except KeyError as exc:
        raise InputError(f"class {exc} has no number in class_ids", target) from exc
    with open(out, "w", encoding="utf-8") as fh:
        for row in m:
            fh.write(" ".join(str(int(v)) if np.isfinite(v) and v == int(v) else repr(float(v)) for v in row) + "\n")


def _numbers(names: pd.Series, what: str, path: Path) -> dict[str, int]:
    """Dynamo numbers tomograms and classes: numeric names keep their number, others get 1, 2, ..."""
    unique = sorted(names.astype(str).unique())
    if all(u.isdigit() for u in unique):
        return {u: int(u) for u in unique}
    ids = {u: i + 1 for i, u in enumerate(unique)}
    log.warning("%s: Dynamo numbers each %s: %s", path, what, ", ".join(f"{v}={k}" for k, v in ids.items()))
    return ids


TBL = register_format(TableFormat(
    name="tbl", suffixes=(".tbl",), read=read_dynamo, write=write_dynamo,
    description="Dynamo table (tomograms and classes numbered)",
    uses=frozenset({"voxel_size", "tomo", "class_names", "class_ids"}),
))
