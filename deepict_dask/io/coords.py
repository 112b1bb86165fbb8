"""Coordinate tables: one in-memory schema, readers and writers for the formats users have.

The schema is a :class:`pandas.DataFrame` with columns

- ``tomo`` (str): tomogram name; ``class`` (str): class name;
- ``x, y, z`` (float): position in voxels, 0-based voxel centres (voxel ``i`` spans ``i-0.5 .. i+0.5``);
- ``x_A, y_A, z_A`` (float): the same position in Angstrom, ``origin + voxel * voxel_size``;
- optional ``score``, ``size``, ``label``, Euler angles ``phi, theta, psi`` (ZXZ, degrees) and any
  further per-particle columns a stage adds (e.g. distances to a context region).

Formats (chosen by suffix, or ``fmt=``):

========== ======================================================================================
``csv``    this schema, with a header row (the project's own format).
``star``   RELION tomography STAR: ``rlnTomoName``, ``rlnCoordinateX/Y/Z`` in pixels; with
           ``shape`` and ``voxel_size`` also RELION 5's ``rlnCenteredCoordinateX/Y/ZAngst``
           (Angstrom relative to the tomogram centre, ``(voxel - shape/2) * voxel_size``).
``json``   copick point set: ``points[].location`` in Angstrom, one class of one tomogram per file.
``ndjson`` CryoET Data Portal points: one JSON object per line, ``location`` in voxels.
``motl``   DeePiCt / TOM motive list: CSV, no header, 20 columns, 0-based voxel coordinates in
           columns 8-10, score in column 1, class number in column 20.
========== ======================================================================================

All writers are atomic; all readers give one clear :class:`InputError` naming the file on bad input.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.volume import as_voxel_size

REQUIRED = ["tomo", "class", "x", "y", "z", "x_A", "y_A", "z_A"]
OPTIONAL = ["score", "size", "label", "phi", "theta", "psi"]
VOXEL = ["x", "y", "z"]
ANGSTROM = ["x_A", "y_A", "z_A"]
FORMATS = ("csv", "star", "json", "ndjson", "motl")

# RELION STAR column names
_STAR_TOMO = "rlnTomoName"
_STAR_PX = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
_STAR_CENTRED = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
_STAR_ANGLES = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
_STAR_EXTRA = {"class": "rlnClassName", "score": "rlnAutopickFigureOfMerit", "size": "rlnDeepictSize", "label": "rlnDeepictLabel"}
_STAR_FLOATS = [*_STAR_PX, *_STAR_CENTRED, *_STAR_ANGLES, _STAR_EXTRA["score"], _STAR_EXTRA["size"]]
_STAR_PIXEL_SIZE = ["rlnTomoTiltSeriesPixelSize", "rlnImagePixelSize", "rlnDetectorPixelSize"]


# ----------------------------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------------------------


def empty_table(extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A table with the schema's columns and no rows (what a stage writes when nothing survives)."""
    cols = REQUIRED + [c for c in extra_columns if c not in REQUIRED]
    df = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in cols})
    return df


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


def validate_table(df: pd.DataFrame, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Check the schema; return the table with canonical dtypes and column order."""
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
    if not np.all(np.isfinite(out[VOXEL + ANGSTROM].to_numpy())):
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


# ----------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------


def table_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` if given, else from the suffix (``.csv`` may be a motive list)."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown table format {fmt!r}; choose one of {list(FORMATS)}", path)
        return fmt
    found = _suffix_format(Path(path))
    if found == "csv" and Path(path).is_file() and _looks_like_motl(Path(path)):
        return "motl"
    return found


def read_table(
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    tomo: str | None = None,
    class_names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Read a coordinate table in any supported format into the schema.

    ``voxel_size`` (Angstrom, scalar or z,y,x) is needed where a format stores only one of voxels
    or Angstrom and does not record the pixel size; ``shape`` (z, y, x) for RELION 5 centred
    coordinates; ``tomo`` names the tomogram for formats that do not (motive lists);
    ``class_names`` maps motive-list class numbers to names.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a directory, not a table file", path)
    kind = table_format(path, fmt)
    reader = {"csv": _read_csv, "star": _read_star, "json": _read_copick, "ndjson": _read_ndjson, "motl": _read_motl}[kind]
    try:
        df = reader(path, voxel_size=voxel_size, shape=shape, tomo=tomo, class_names=class_names)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read as a {kind} table: {exc}", path) from exc
    return validate_table(df, path)


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    class_ids: Mapping[str, int] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a table atomically in the format given by ``fmt`` or the suffix of ``path``."""
    path = Path(path)
    kind = table_format(path, fmt or _suffix_format(path))
    df = validate_table(df)
    writer = {"csv": _write_csv, "star": _write_star, "json": _write_copick, "ndjson": _write_ndjson, "motl": _write_motl}[kind]
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(df, tmp, voxel_size=voxel_size, shape=shape, class_ids=class_ids)
    return path


def _suffix_format(path: Path) -> str:
    """The format a new file gets from its suffix (``.csv`` is the project's schema, not a motive list)."""
    by_suffix = {".csv": "csv", ".txt": "csv", ".star": "star", ".json": "json", ".ndjson": "ndjson", ".motl": "motl"}
    if path.suffix.lower() not in by_suffix:
        raise InputError(f"cannot tell the table format from the suffix {path.suffix!r}; use .csv, .star, .json or .ndjson", path)
    return by_suffix[path.suffix.lower()]


def read_tables(paths: Sequence[str | os.PathLike], **kwargs: Any) -> pd.DataFrame:
    """Read and concatenate several tables (e.g. one per tomogram)."""
    frames = [read_table(p, **kwargs) for p in paths]
    return validate_table(pd.concat(frames, ignore_index=True)) if frames else empty_table()


# ----------------------------------------------------------------------------------------------
# CSV (the project's own format)
# ----------------------------------------------------------------------------------------------


def _read_csv(path: Path, *, voxel_size=None, **_: Any) -> pd.DataFrame:
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
        if voxel_size is None:
            have = "voxel" if has_vox else "Angstrom"
            raise InputError(f"table has only {have} coordinates; give the voxel size to derive the others", path)
        df = with_angstrom(df, voxel_size) if has_vox else with_voxels(df, voxel_size)
    for col, default in (("tomo", path.stem), ("class", "particle")):
        if col not in df.columns:
            df[col] = default
    return df


def _write_csv(df: pd.DataFrame, path: Path, **_: Any) -> None:
    # No float_format: pandas writes the shortest repr, so numbers round-trip exactly.
    df.to_csv(path, index=False)


# ----------------------------------------------------------------------------------------------
# RELION STAR
# ----------------------------------------------------------------------------------------------


def _star_blocks(path: Path) -> dict[str, pd.DataFrame]:
    import starfile

    try:
        # numbers we use are read as text and parsed exactly here: pandas' default float parser is
        # off by one unit in the last place for some numbers, and which ones depends on its version
        data = starfile.read(path, always_dict=True, parse_as_string=_STAR_FLOATS)
    except Exception as exc:  # starfile raises many types on malformed input
        raise InputError(f"not a readable STAR file ({exc})", path) from exc
    blocks = {k: v for k, v in data.items() if isinstance(v, pd.DataFrame)}
    for df in blocks.values():
        for col in set(_STAR_FLOATS) & set(df.columns):
            try:  # Python's float() rounds correctly, so written numbers come back bit for bit
                df[col] = np.asarray(df[col].to_numpy(dtype=object), dtype=np.float64)
            except ValueError as exc:
                raise InputError(f"STAR column {col} holds a value that is not a number ({exc})", path) from exc
    return blocks


def _read_star(path: Path, *, voxel_size=None, shape=None, **_: Any) -> pd.DataFrame:
    blocks = _star_blocks(path)
    particles = None
    for df in blocks.values():
        if all(c in df.columns for c in _STAR_PX) or all(c in df.columns for c in _STAR_CENTRED):
            particles = df
            break
    if particles is None:
        raise InputError(
            "STAR file has no coordinates (no data block with rlnCoordinateX/Y/Z or rlnCenteredCoordinateX/Y/ZAngst)",
            path,
        )
    if voxel_size is None:
        voxel_size = _star_pixel_size(blocks, particles)
    out = pd.DataFrame()
    out["tomo"] = particles[_STAR_TOMO].astype(str) if _STAR_TOMO in particles.columns else path.stem
    out["class"] = particles[_STAR_EXTRA["class"]].astype(str) if _STAR_EXTRA["class"] in particles.columns else "particle"
    if all(c in particles.columns for c in _STAR_PX):
        for c, src in zip(VOXEL, _STAR_PX):
            out[c] = particles[src].astype(np.float64).to_numpy()
        if voxel_size is None:
            raise InputError("STAR file records no pixel size; give the voxel size", path)
        out = with_angstrom(out, voxel_size)
    else:
        if voxel_size is None or shape is None:
            raise InputError(
                "RELION 5 centred coordinates need the tomogram shape and voxel size to become voxels", path
            )
        vs = as_voxel_size(voxel_size)
        centre = np.asarray(shape, dtype=np.float64)[::-1] / 2.0  # x, y, z
        for i, (c, src) in enumerate(zip(VOXEL, _STAR_CENTRED)):
            out[c] = particles[src].astype(np.float64).to_numpy() / vs[2 - i] + centre[i]
        out = with_angstrom(out, vs)
    for ours, theirs in _STAR_EXTRA.items():
        if ours != "class" and theirs in particles.columns:
            out[ours] = particles[theirs].to_numpy()
    if all(c in particles.columns for c in _STAR_ANGLES):
        out["phi"], out["theta"], out["psi"] = _zyz_to_zxz(particles[_STAR_ANGLES].to_numpy(dtype=np.float64))
    return out


def _star_pixel_size(blocks: Mapping[str, pd.DataFrame], particles: pd.DataFrame) -> float | None:
    for df in [particles, *blocks.values()]:
        for col in _STAR_PIXEL_SIZE:
            if col in df.columns and len(df):
                return float(df[col].iloc[0])
    return None


def _write_star(df: pd.DataFrame, path: Path, *, voxel_size=None, shape=None, **_: Any) -> None:
    import starfile

    out = pd.DataFrame({_STAR_TOMO: df["tomo"].to_numpy()})
    for c, dst in zip(VOXEL, _STAR_PX):
        out[dst] = df[c].to_numpy()
    if shape is not None:
        vs = as_voxel_size(voxel_size) if voxel_size is not None else _voxel_size_from_table(df)
        centre = np.asarray(shape, dtype=np.float64)[::-1] / 2.0
        for i, (c, dst) in enumerate(zip(VOXEL, _STAR_CENTRED)):
            out[dst] = (df[c].to_numpy() - centre[i]) * vs[2 - i]
    for ours, theirs in _STAR_EXTRA.items():
        if ours in df.columns:
            out[theirs] = df[ours].to_numpy()
    if all(c in df.columns for c in ("phi", "theta", "psi")):
        rot, tilt, psi = _zxz_to_zyz(df[["phi", "theta", "psi"]].to_numpy(dtype=np.float64))
        out[_STAR_ANGLES[0]], out[_STAR_ANGLES[1]], out[_STAR_ANGLES[2]] = rot, tilt, psi
    vs_col = voxel_size if voxel_size is not None else _voxel_size_from_table(df)
    if vs_col is not None:
        out[_STAR_PIXEL_SIZE[0]] = as_voxel_size(vs_col)[2]
    starfile.write({"particles": out}, path, float_format=None)


def _voxel_size_from_table(df: pd.DataFrame) -> tuple[float, float, float] | None:
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


def _zxz_to_zyz(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ZXZ intrinsic Euler angles (phi, theta, psi) -> the same rotation as ZYZ (RELION rot, tilt, psi)."""
    from scipy.spatial.transform import Rotation

    zyz = Rotation.from_euler("ZXZ", angles, degrees=True).as_euler("ZYZ", degrees=True)
    return zyz[:, 0], zyz[:, 1], zyz[:, 2]


def _zyz_to_zxz(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.spatial.transform import Rotation

    zxz = Rotation.from_euler("ZYZ", angles, degrees=True).as_euler("ZXZ", degrees=True)
    return zxz[:, 0], zxz[:, 1], zxz[:, 2]


# ----------------------------------------------------------------------------------------------
# copick JSON (Angstrom)
# ----------------------------------------------------------------------------------------------


def _read_copick(path: Path, *, voxel_size=None, **_: Any) -> pd.DataFrame:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or "points" not in doc:
        raise InputError("not a copick point file (no 'points' list)", path)
    points = doc["points"] or []
    if voxel_size is None:
        voxel_size = doc.get("voxel_spacing")
    if voxel_size is None:
        raise InputError("copick file has no voxel_spacing; give the voxel size", path)
    try:
        loc = np.array([[p["location"]["x"], p["location"]["y"], p["location"]["z"]] for p in points], dtype=np.float64)
    except (KeyError, TypeError) as exc:
        raise InputError(f"copick point without location x/y/z ({exc})", path) from exc
    loc = loc.reshape(-1, 3)
    df = pd.DataFrame({"tomo": doc.get("run_name") or path.stem, "class": doc.get("pickable_object_name") or "particle"}, index=range(len(loc)))
    df["x_A"], df["y_A"], df["z_A"] = loc[:, 0], loc[:, 1], loc[:, 2]
    df = with_voxels(df, voxel_size)
    if points and all("score" in p for p in points):
        df["score"] = [float(p["score"]) for p in points]
    if points and all("instance_id" in p for p in points):
        df["label"] = [int(p["instance_id"]) for p in points]
    return df


def _write_copick(df: pd.DataFrame, path: Path, *, voxel_size=None, **_: Any) -> None:
    tomos, classes = df["tomo"].unique(), df["class"].unique()
    if len(tomos) > 1 or len(classes) > 1:
        raise InputError(
            f"a copick point file holds one class of one tomogram; this table has {len(classes)} classes "
            f"and {len(tomos)} tomograms (use write_copick_dir)",
            path,
        )
    vs = as_voxel_size(voxel_size) if voxel_size is not None else _voxel_size_from_table(df)
    points = []
    for r in df.to_dict("records"):
        p: dict[str, Any] = {
            "location": {"x": float(r["x_A"]), "y": float(r["y_A"]), "z": float(r["z_A"])},
            "transformation_": _transformation(r),
        }
        if "score" in df.columns:
            p["score"] = float(r["score"])
        if "label" in df.columns:
            p["instance_id"] = int(r["label"])
        points.append(p)
    doc = {
        "pickable_object_name": str(classes[0]) if len(classes) else "particle",
        "user_id": "deepict",
        "session_id": "0",
        "run_name": str(tomos[0]) if len(tomos) else "",
        "voxel_spacing": None if vs is None else vs[2],
        "unit": "angstrom",
        "trust_orientation": all(c in df.columns for c in ("phi", "theta", "psi")),
        "points": points,
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)


def _transformation(row: Mapping[str, Any]) -> list[list[float]]:
    m = np.eye(4)
    if all(k in row for k in ("phi", "theta", "psi")):
        from scipy.spatial.transform import Rotation

        m[:3, :3] = Rotation.from_euler("ZXZ", [row["phi"], row["theta"], row["psi"]], degrees=True).as_matrix()
    return m.tolist()


def write_copick_dir(df: pd.DataFrame, root: str | os.PathLike, *, voxel_size=None, user_id: str = "deepict", session_id: str = "0") -> list[Path]:
    """Write a table as copick's overlay layout: ``root/<run>/Picks/<user>_<session>_<class>.json``."""
    written = []
    for (tomo, cls), part in validate_table(df).groupby(["tomo", "class"], sort=True):
        target = Path(root) / str(tomo) / "Picks" / f"{user_id}_{session_id}_{cls}.json"
        written.append(write_table(part, target, fmt="json", voxel_size=voxel_size))
    return written


# ----------------------------------------------------------------------------------------------
# CryoET Data Portal NDJSON (voxels)
# ----------------------------------------------------------------------------------------------


def _read_ndjson(path: Path, *, voxel_size=None, tomo=None, **_: Any) -> pd.DataFrame:
    if voxel_size is None:
        raise InputError("portal point files are in voxels and record no voxel size; give the voxel size", path)
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
    df = make_table(tomo or path.stem, [r[3].get("class", "particle") for r in rows], xyz=xyz, voxel_size=voxel_size)
    if rows and all("xyz_rotation_matrix" in r[3] for r in rows):
        from scipy.spatial.transform import Rotation

        mats = np.array([r[3]["xyz_rotation_matrix"] for r in rows], dtype=np.float64)
        eul = Rotation.from_matrix(mats).as_euler("ZXZ", degrees=True)
        df["phi"], df["theta"], df["psi"] = eul[:, 0], eul[:, 1], eul[:, 2]
    for key in ("score", "instance_id"):
        if rows and all(key in r[3] for r in rows):
            df["score" if key == "score" else "label"] = [r[3][key] for r in rows]
    return df


def _write_ndjson(df: pd.DataFrame, path: Path, **_: Any) -> None:
    oriented = all(c in df.columns for c in ("phi", "theta", "psi"))
    with open(path, "w", encoding="utf-8") as fh:
        for _, r in df.iterrows():
            obj: dict[str, Any] = {
                "type": "orientedPoint" if oriented else "point",
                "location": {"x": float(r["x"]), "y": float(r["y"]), "z": float(r["z"])},
                "class": str(r["class"]),
            }
            if oriented:
                obj["xyz_rotation_matrix"] = np.asarray(_transformation(r))[:3, :3].tolist()
            if "score" in df.columns:
                obj["score"] = float(r["score"])
            if "label" in df.columns:
                obj["instance_id"] = int(r["label"])
            fh.write(json.dumps(obj) + "\n")


# ----------------------------------------------------------------------------------------------
# DeePiCt / TOM motive list
# ----------------------------------------------------------------------------------------------


def _looks_like_motl(path: Path) -> bool:
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


def _read_motl(path: Path, *, voxel_size=None, tomo=None, class_names=None, **_: Any) -> pd.DataFrame:
    if voxel_size is None:
        raise InputError("motive lists record no voxel size; give the voxel size", path)
    raw = pd.read_csv(path, header=None, float_precision="round_trip")
    if raw.shape[1] != 20:
        raise InputError(f"a motive list has 20 columns, this file has {raw.shape[1]}", path)
    m = raw.to_numpy(dtype=np.float64)
    names = class_names or {}
    classes = [names.get(int(c), str(int(c))) for c in m[:, 19]]
    df = make_table(tomo or path.stem, classes, xyz=m[:, 7:10], voxel_size=voxel_size, score=m[:, 0])
    if np.any(m[:, 16:19] != 0):
        df["phi"], df["psi"], df["theta"] = m[:, 16], m[:, 17], m[:, 18]
    return df


def _write_motl(df: pd.DataFrame, path: Path, *, class_ids=None, **_: Any) -> None:
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
        raise InputError(f"class {exc} has no number in class_ids", path) from exc
    # repr-exact numbers, no header: the layout DeePiCt reads.
    pd.DataFrame(m).to_csv(path, index=False, header=False)
