"""copick: ``json`` point files (Angstrom, one class of one tomogram each) and ``copick`` project directories.

A project is ``copick_config.json`` (with ``pickable_objects``) and
``ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json``: any number of classes and tomograms.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io import orientation
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.tables.registry import TableContext, TableFormat, register_format
from deepict_dask.io.tables.schema import VoxelSizeNeeded, validate_table, voxel_size_from_table, with_voxels
from deepict_dask.io.volume import as_voxel_size

COPICK_CONFIG = "copick_config.json"


def _read_copick(path: Path, *, voxel_size=None) -> pd.DataFrame:
    """One copick point file; positions are ``location`` plus the matrix's translation, in Angstrom."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or "points" not in doc:
        raise InputError("not a copick point file (no 'points' list)", path)
    points = doc["points"] or []
    if voxel_size is None:
        voxel_size = doc.get("voxel_spacing")
    if voxel_size is None:
        raise VoxelSizeNeeded("copick file has no voxel_spacing; give the voxel size", path)
    try:
        loc = np.array([[p["location"]["x"], p["location"]["y"], p["location"]["z"]] for p in points], dtype=np.float64)
    except (KeyError, TypeError) as exc:
        raise InputError(f"copick point without location x/y/z ({exc})", path) from exc
    loc = loc.reshape(-1, 3)
    mats = np.array([p.get("transformation_") or np.eye(4).tolist() for p in points], dtype=np.float64).reshape(-1, 4, 4)
    loc = loc + mats[:, :3, 3]  # copick adds the translation (as its RELION converter does)
    df = pd.DataFrame({"tomo": doc.get("run_name") or path.stem, "class": doc.get("pickable_object_name") or "particle"}, index=range(len(loc)))
    df["x_A"], df["y_A"], df["z_A"] = loc[:, 0], loc[:, 1], loc[:, 2]
    df = with_voxels(df, voxel_size)
    if points and all("score" in p for p in points):
        df["score"] = [float(p["score"]) for p in points]
    if points and all("instance_id" in p for p in points):
        df["label"] = [int(p["instance_id"]) for p in points]
    if points and (doc.get("trust_orientation", True) or not np.allclose(mats[:, :3, :3], np.eye(3))):
        orientation.set_rotations(df, orientation.rotations_from_matrices(mats[:, :3, :3]))
    return df


def _check_one_copick_set(df: pd.DataFrame, path: Path) -> None:
    """A copick point file holds one class of one tomogram: say so before anything is written."""
    tomos, classes = df["tomo"].unique(), df["class"].unique()
    if len(tomos) > 1 or len(classes) > 1:
        raise InputError(
            f"a copick point file holds one class of one tomogram; this table has {len(classes)} classes "
            f"and {len(tomos)} tomograms: write a copick project instead (a directory, format 'copick')",
            path,
        )


def _write_copick(df: pd.DataFrame, path: Path, *, voxel_size=None, user_id: str = "deepict",
                  session_id: str = "0") -> None:
    """One copick point file; orientations as copick's 4x4 matrices (see :mod:`.orientation`)."""
    tomos, classes = df["tomo"].unique(), df["class"].unique()
    vs = as_voxel_size(voxel_size) if voxel_size is not None else voxel_size_from_table(df)
    oriented = orientation.has_angles(df)
    mats = orientation.matrices_from_table(df) if oriented else np.broadcast_to(np.eye(3), (len(df), 3, 3))
    points = []
    for i, r in enumerate(df.to_dict("records")):
        m = np.eye(4)
        m[:3, :3] = mats[i]
        p: dict[str, Any] = {
            "location": {"x": float(r["x_A"]), "y": float(r["y_A"]), "z": float(r["z_A"])},
            "transformation_": m.tolist(),
        }
        if "score" in df.columns:
            p["score"] = float(r["score"])
        if "label" in df.columns:
            p["instance_id"] = int(r["label"])
        points.append(p)
    doc = {
        "pickable_object_name": str(classes[0]) if len(classes) else "particle",
        "user_id": user_id,
        "session_id": session_id,
        "run_name": str(tomos[0]) if len(tomos) else "",
        "voxel_spacing": None if vs is None else vs[2],
        "unit": "angstrom",
        "trust_orientation": oriented,
        "points": points,
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)


def read_point_file(path: Path, ctx: TableContext) -> pd.DataFrame:
    """Reader of format ``json``: one copick point file."""
    return _read_copick(path, voxel_size=ctx.voxel_size)


def write_point_file(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    """Writer of format ``json``: one class of one tomogram, refused (naming ``target``) otherwise."""
    _check_one_copick_set(df, target)
    _write_copick(df, out, voxel_size=ctx.voxel_size)


def _is_copick_dir(path: Path) -> bool:
    return path.is_dir() and ((path / COPICK_CONFIG).is_file() or (path / "ExperimentRuns").is_dir())


def _copick_name(value: str, what: str, root: Path) -> str:
    """copick splits ``<user>_<session>_<object>.json`` on '_': names must not contain it."""
    if not value or "_" in value or "/" in value:
        raise InputError(f"copick cannot store the {what} {value!r}: copick names may not be empty or contain '_' "
                         f"or '/' (it splits file names <user>_<session>_<object>.json on '_'); rename it", root)
    return value


def write_copick_dir(
    df: pd.DataFrame,
    root: str | os.PathLike,
    *,
    voxel_size=None,
    user_id: str = "deepict",
    session_id: str = "0",
    overwrite: bool = True,
) -> list[Path]:
    """Write a table as a copick project that copick itself opens.

    ``root/copick_config.json`` lists every class as a pickable object (overlay root: ``root``,
    as an absolute path) and each (tomogram, class) goes to
    ``root/ExperimentRuns/<tomo>/Picks/<user>_<session>_<class>.json``. Existing picks of other
    users or classes under ``root`` stay; a config already there is extended, not replaced.
    """
    root = Path(root)
    df = validate_table(df)
    _copick_name(user_id, "user id", root)
    _copick_name(session_id, "session id", root)
    classes = [_copick_name(str(c), "class name", root) for c in sorted(df["class"].unique())]
    bad_runs = [t for t in df["tomo"].astype(str).unique() if not t or "/" in t or t.startswith(".")]
    if bad_runs:
        raise InputError(f"copick cannot store the tomogram (run) name(s) {bad_runs}: a run is a directory", root)
    if root.exists() and not root.is_dir():
        raise InputError("exists and is not a directory; a copick project is a directory", root)
    if voxel_size is None:  # one class of one tomogram may hold too few points to tell
        voxel_size = voxel_size_from_table(df)
    config = _read_copick_config(root)  # an unusable existing config fails before any pick is written
    written = []
    for (tomo, cls), part in df.groupby(["tomo", "class"], sort=True):
        target = root / "ExperimentRuns" / str(tomo) / "Picks" / f"{user_id}_{session_id}_{cls}.json"
        with atomic_path(target, overwrite=overwrite) as tmp:
            _write_copick(part, tmp, voxel_size=voxel_size, user_id=user_id, session_id=session_id)
        written.append(target)
    _write_copick_config(root, classes, config)
    return written


def _read_copick_config(root: Path) -> dict[str, Any]:
    """The project's ``copick_config.json`` (a new one when there is none); one error line if unusable."""
    path = root / COPICK_CONFIG
    config: dict[str, Any] = {"config_type": "filesystem", "name": root.name, "description": "written by deepict",
                              "version": "0.2.0", "pickable_objects": []}
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"existing copick config is not JSON ({exc})", path) from exc
        objects = config.get("pickable_objects", []) if isinstance(config, dict) else None
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise InputError("existing copick config is not a JSON object with a 'pickable_objects' list", path)
    return config


def _write_copick_config(root: Path, classes: Sequence[str], config: dict[str, Any]) -> Path:
    """Create or extend ``copick_config.json`` so every class is a pickable object."""
    path = root / COPICK_CONFIG
    config["overlay_root"] = "local://" + str(root.resolve())
    objects = config.setdefault("pickable_objects", [])
    known = {o.get("name") for o in objects}
    next_label = max([int(o.get("label") or 0) for o in objects] + [0]) + 1
    for name in classes:
        if name not in known:
            objects.append({"name": name, "is_particle": True, "label": next_label})
            next_label += 1
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def _run_voxel_spacing(run: Path) -> float | None:
    """The smallest ``VoxelSpacing<size>`` of a copick run (what copick's converter uses), if any."""
    sizes = []
    for d in run.glob("VoxelSpacing*"):
        try:
            sizes.append(float(d.name.removeprefix("VoxelSpacing")))
        except ValueError:
            continue
    return min(sizes) if sizes else None


def read_copick_dir(root: Path, *, voxel_size=None, **_: Any) -> pd.DataFrame:
    """Every point file of a copick project (all users and sessions) as one table.

    A point file without ``voxel_spacing`` takes its run's smallest voxel spacing, as copick does.
    """
    files = sorted(Path(root).glob("ExperimentRuns/*/Picks/*.json"))
    frames = []
    for f in files:
        part = validate_table(_read_copick(f, voxel_size=voxel_size or _run_voxel_spacing(f.parent.parent)), f)
        part["tomo"] = f.parent.parent.name  # copick's run is the directory name
        frames.append(part)
    if not frames:
        raise InputError("copick project has no picks (no ExperimentRuns/<run>/Picks/*.json)", root)
    return pd.concat(frames, ignore_index=True)


def _read_project(root: Path, ctx: TableContext) -> pd.DataFrame:
    return read_copick_dir(root, voxel_size=ctx.voxel_size)


def _write_project(df: pd.DataFrame, root: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    write_copick_dir(df, root, voxel_size=ctx.voxel_size, overwrite=overwrite)


JSON = register_format(TableFormat(
    name="json", suffixes=(".json",), read=read_point_file, write=write_point_file,
    description="copick point file (Angstrom), one class of one tomogram", uses=frozenset({"voxel_size"}),
    one_set=True, many_tomograms=False,
))
COPICK = register_format(TableFormat(
    name="copick", suffixes=(), read=_read_project, write=_write_project,
    description="copick project directory, any classes and tomograms", uses=frozenset({"voxel_size"}),
    directory=True, detect=_is_copick_dir,
))
