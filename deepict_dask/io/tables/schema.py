"""The in-memory coordinate table every format is read into and written from.

A :class:`pandas.DataFrame` with columns

- ``tomo`` (str): tomogram name; ``class`` (str): class name;
- ``x, y, z`` (float): position in voxels, 0-based voxel centres (voxel ``i`` spans ``i-0.5 .. i+0.5``);
- ``x_A, y_A, z_A`` (float): the same position in Angstrom, ``origin + voxel * voxel_size``;
- optional ``score``, ``size``, ``label``, Euler angles ``phi, theta, psi`` (ZXZ, degrees) and any
  further per-particle columns a stage adds (e.g. distances to a context region).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.volume import as_voxel_size

REQUIRED = ["tomo", "class", "x", "y", "z", "x_A", "y_A", "z_A"]
OPTIONAL = ["score", "size", "label", "phi", "theta", "psi"]
VOXEL = ["x", "y", "z"]
ANGSTROM = ["x_A", "y_A", "z_A"]


class VoxelSizeNeeded(InputError):
    """A table's format records no voxel size and none was given."""


def empty_table(extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A table with the schema's columns and no rows (what a stage writes when nothing survives)."""
    cols = REQUIRED + [c for c in extra_columns if c not in REQUIRED]
    df = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in cols})
    return df


def concat_tables(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The non-empty ``frames`` as one table (the schema's empty table if none has rows).

    Empty frames are left out so that their column dtypes do not change the others'.
    """
    kept = [f for f in frames if len(f)]
    return pd.concat(kept, ignore_index=True) if kept else empty_table()


def _dtype(column: str) -> str:
    if column in ("tomo", "class"):
        return "object"
    if column == "label":
        return "int64"
    return "float64"


def make_table(
    tomo: str | Sequence[str],
    cls: str | Sequence[str],
    *,
    zyx: Any = None,
    xyz: Any = None,
    voxel_size: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    **columns: Any,
) -> pd.DataFrame:
    """Build a table from voxel positions given as an (N, 3) array in ZYX (arrays) or XYZ order.

    ``voxel_size`` and ``origin`` are (z, y, x) like everything else in the package; extra keyword
    arguments become columns (``score=..., size=...``).
    """
    if (zyx is None) == (xyz is None):
        raise ValueError("give exactly one of zyx= or xyz=")
    pts = np.asarray(zyx if zyx is not None else xyz, dtype=np.float64).reshape(-1, 3)
    if zyx is not None:
        pts = pts[:, ::-1]
    vz, vy, vx = as_voxel_size(voxel_size)
    oz, oy, ox = (float(o) for o in origin)
    n = len(pts)
    df = pd.DataFrame(
        {
            "tomo": _broadcast(tomo, n),
            "class": _broadcast(cls, n),
            "x": pts[:, 0],
            "y": pts[:, 1],
            "z": pts[:, 2],
            "x_A": ox + pts[:, 0] * vx,
            "y_A": oy + pts[:, 1] * vy,
            "z_A": oz + pts[:, 2] * vz,
        }
    )
    for name, values in columns.items():
        df[name] = _broadcast(values, n) if isinstance(values, str) or np.isscalar(values) else np.asarray(values)
    return df


def _broadcast(value: Any, n: int) -> list:
    if isinstance(value, str) or np.isscalar(value):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"column has {len(values)} values for {n} rows")
    return values


def validate_table(df: pd.DataFrame, path: str | os.PathLike | None = None, *, angstrom_optional: bool = False) -> pd.DataFrame:
    """Check the schema; return the table with canonical dtypes and column order.

    ``angstrom_optional``: the Angstrom columns may be NaN (a voxel table of unknown voxel size).
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(
            f"table lacks the column(s) {missing}; found {list(df.columns)}; expected at least {REQUIRED}", path
        )
    out = df.copy()
    for c in VOXEL + ANGSTROM + [c for c in ("score", "size", "phi", "theta", "psi") if c in out.columns]:
        try:
            out[c] = out[c].astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"column {c!r} holds values that are not numbers ({exc})", path) from exc
    checked = VOXEL if angstrom_optional else VOXEL + ANGSTROM
    if not np.all(np.isfinite(out[checked].to_numpy())):
        raise InputError("table has NaN or infinite coordinates", path)
    out["tomo"] = out["tomo"].astype(str)
    out["class"] = out["class"].astype(str)
    order = REQUIRED + [c for c in out.columns if c not in REQUIRED]
    return out[order].reset_index(drop=True)


def with_angstrom(df: pd.DataFrame, voxel_size: float | Sequence[float], origin: Sequence[float] = (0, 0, 0)) -> pd.DataFrame:
    """Fill ``x_A, y_A, z_A`` from the voxel columns."""
    vz, vy, vx = as_voxel_size(voxel_size)
    oz, oy, ox = (float(o) for o in origin)
    df = df.copy()
    df["x_A"], df["y_A"], df["z_A"] = ox + df["x"] * vx, oy + df["y"] * vy, oz + df["z"] * vz
    return df


def with_voxels(df: pd.DataFrame, voxel_size: float | Sequence[float], origin: Sequence[float] = (0, 0, 0)) -> pd.DataFrame:
    """Fill ``x, y, z`` from the Angstrom columns."""
    vz, vy, vx = as_voxel_size(voxel_size)
    oz, oy, ox = (float(o) for o in origin)
    df = df.copy()
    df["x"], df["y"], df["z"] = (df["x_A"] - ox) / vx, (df["y_A"] - oy) / vy, (df["z_A"] - oz) / vz
    return df


def voxel_size_from_table(df: pd.DataFrame) -> tuple[float, float, float] | None:
    """Recover the (z, y, x) voxel size from rows where both unit systems are filled, if consistent."""
    if df.empty:
        return None
    sizes = []
    for v, a in zip("zyx", ("z_A", "y_A", "x_A")):
        d = df[v].to_numpy() - df[v].min()
        da_ = df[a].to_numpy() - df[a].min()
        nz = np.abs(d) > 1e-9
        sizes.append(float(np.median(da_[nz] / d[nz])) if nz.any() else math.nan)
    known = [s for s in sizes if math.isfinite(s)]
    if not known:
        return None
    return tuple(s if math.isfinite(s) else known[0] for s in sizes)  # type: ignore[return-value]
