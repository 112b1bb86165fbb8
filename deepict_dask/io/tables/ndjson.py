"""``ndjson``: CryoET Data Portal points, one JSON object per line, ``location`` in voxels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io import orientation
from deepict_dask.io.tables.registry import TableContext, TableFormat, register_format
from deepict_dask.io.tables.schema import VoxelSizeNeeded, make_table


def read_ndjson(path: Path, ctx: TableContext) -> pd.DataFrame:
    """Portal points; the file records neither voxel size nor tomogram, so the context gives them."""
    if ctx.voxel_size is None:
        raise VoxelSizeNeeded("portal point files are in voxels and record no voxel size; give the voxel size", path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                loc = obj["location"]
                rows.append((float(loc["x"]), float(loc["y"]), float(loc["z"]), obj))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"line {lineno} is not a point with location x/y/z ({exc})", path) from exc
    xyz = np.array([r[:3] for r in rows], dtype=np.float64).reshape(-1, 3)
    df = make_table(ctx.tomo or path.stem, [r[3].get("class", "particle") for r in rows], xyz=xyz,
                    voxel_size=ctx.voxel_size)
    if rows and all("xyz_rotation_matrix" in r[3] for r in rows):
        mats = np.array([r[3]["xyz_rotation_matrix"] for r in rows], dtype=np.float64)
        orientation.set_rotations(df, orientation.rotations_from_matrices(mats))
    for key in ("score", "instance_id"):
        if rows and all(key in r[3] for r in rows):
            df["score" if key == "score" else "label"] = [r[3][key] for r in rows]
    return df


def write_ndjson(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    """Portal points in voxels; orientations as the portal's ``xyz_rotation_matrix`` (copick's matrix)."""
    oriented = orientation.has_angles(df)
    mats = orientation.matrices_from_table(df) if oriented else None
    with open(out, "w", encoding="utf-8") as fh:
        for i, (_, r) in enumerate(df.iterrows()):
            obj: dict[str, Any] = {
                "type": "orientedPoint" if oriented else "point",
                "location": {"x": float(r["x"]), "y": float(r["y"]), "z": float(r["z"])},
                "class": str(r["class"]),
            }
            if oriented:
                obj["xyz_rotation_matrix"] = mats[i].tolist()
            if "score" in df.columns:
                obj["score"] = float(r["score"])
            if "label" in df.columns:
                obj["instance_id"] = int(r["label"])
            fh.write(json.dumps(obj) + "\n")


NDJSON = register_format(TableFormat(
    name="ndjson", suffixes=(".ndjson",), read=read_ndjson, write=write_ndjson,
    description="CryoET Data Portal points (voxels), one tomogram", uses=frozenset({"voxel_size", "tomo"}),
    many_tomograms=False,
))
