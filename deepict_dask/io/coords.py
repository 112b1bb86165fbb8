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
``copick`` a copick project directory: ``copick_config.json`` (with ``pickable_objects``) and
           ``ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json``, any number of classes
           and tomograms (:func:`write_copick_dir`).
``ndjson`` CryoET Data Portal points: one JSON object per line, ``location`` in voxels.
``motl``   DeePiCt / TOM motive list: CSV, no header, 20 columns, 0-based voxel coordinates in
           columns 8-10, score in column 1, class number in column 20.
``tbl``    Dynamo table: plain text, one particle per line, at least 26 numeric columns (below).
========== ======================================================================================

Orientations (``phi, theta, psi``) are converted at each format's boundary; the convention of each
format is stated in :mod:`deepict_dask.io.orientation`.

All writers are atomic; all readers give one clear :class:`InputError` naming the file on bad input.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io import orientation
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.volume import as_voxel_size

log = logging.getLogger(__name__)

REQUIRED = ["tomo", "class", "x", "y", "z", "x_A", "y_A", "z_A"]
OPTIONAL = ["score", "size", "label", "phi", "theta", "psi"]
VOXEL = ["x", "y", "z"]
ANGSTROM = ["x_A", "y_A", "z_A"]
FORMATS = ("csv", "star", "json", "copick", "ndjson", "motl", "tbl")

# RELION STAR column names
_STAR_TOMO = "rlnTomoName"
_STAR_PX = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
_STAR_CENTRED = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
_STAR_ANGLES = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
_STAR_EXTRA = {"class": "rlnClassName", "score": "rlnAutopickFigureOfMerit", "size": "rlnDeepictSize", "label": "rlnDeepictLabel"}
_STAR_FLOATS = [*_STAR_PX, *_STAR_CENTRED, *_STAR_ANGLES, _STAR_EXTRA["score"], _STAR_EXTRA["size"]]
_STAR_TS_PIXEL = "rlnTomoTiltSeriesPixelSize"
_STAR_PIXEL_SIZE = ["rlnDeepictVoxelSize", _STAR_TS_PIXEL, "rlnImagePixelSize", "rlnDetectorPixelSize"]
_STAR_VOXEL = "rlnDeepictVoxelSize"  # ours: the tomogram voxel size that rlnCoordinateX/Y/Z count in


_ASSUMED_TS_PIXEL: set[float] = set()  # voxel sizes already warned about as tilt-series pixel sizes


class VoxelSizeNeeded(InputError):
    """A table's format records no voxel size and none was given."""


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


# ----------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------


def table_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` if given, else from the suffix (``.csv`` may be a motive list)."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown table format {fmt!r}; choose one of {list(FORMATS)}", path)
        return fmt
    if Path(path).is_dir() and _is_copick_dir(Path(path)):
        return "copick"
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
    angstrom_optional: bool = False,
) -> pd.DataFrame:
    """Read a coordinate table in any supported format into the schema.

    ``voxel_size`` (Angstrom, scalar or z,y,x) is needed where a format stores only one of voxels
    or Angstrom and does not record the pixel size; ``shape`` (z, y, x) for RELION 5 centred
    coordinates; ``tomo`` names the tomogram for formats that do not (motive lists);
    ``class_names`` maps motive-list / Dynamo class numbers to names. With ``angstrom_optional``
    a voxel table of unknown voxel size is read with NaN Angstrom columns instead of refused
    (for uses that need voxels only, such as matching with a voxel tolerance).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    kind = table_format(path, fmt)
    if path.is_dir() and kind != "copick":
        raise InputError("is a directory, not a table file (nor a copick project)", path)
    reader = {"csv": _read_csv, "star": _read_star, "json": _read_copick, "copick": read_copick_dir,
              "ndjson": _read_ndjson, "motl": _read_motl, "tbl": _read_dynamo}[kind]
    try:
        try:
            df = reader(path, voxel_size=voxel_size, shape=shape, tomo=tomo, class_names=class_names)
        except VoxelSizeNeeded:
            if not angstrom_optional or voxel_size is not None:
                raise
            df = reader(path, voxel_size=1.0, shape=shape, tomo=tomo, class_names=class_names)
            df["x_A"] = df["y_A"] = df["z_A"] = np.nan
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read as a {kind} table: {exc}", path) from exc
    return validate_table(df, path, angstrom_optional=angstrom_optional)


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    class_ids: Mapping[str, int] | None = None,
    overwrite: bool = True,
    tilt_series_pixel_size: float | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write a table atomically in the format given by ``fmt`` or the suffix of ``path``.

    ``shape`` (one tomogram) or ``shapes`` (per tomogram name) add RELION 5's centred Angstrom
    columns to STAR; ``tilt_series_pixel_size`` fills ``rlnTomoTiltSeriesPixelSize`` (default: the
    voxel size, with a warning saying so). Format ``copick`` writes a project directory.
    """
    path = Path(path)
    kind = table_format(path, fmt or _suffix_format(path))
    df = validate_table(df)
    if kind == "copick":
        write_copick_dir(df, path, voxel_size=voxel_size, overwrite=overwrite)
        return path
    if kind == "json":
        _check_one_copick_set(df, path)
    writer = {"csv": _write_csv, "star": _write_star, "json": _write_copick, "ndjson": _write_ndjson,
              "motl": _write_motl, "tbl": _write_dynamo}[kind]
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(df, tmp, voxel_size=voxel_size, shape=shape, shapes=shapes, class_ids=class_ids,
               tilt_series_pixel_size=tilt_series_pixel_size, target=path)
    return path


def _suffix_format(path: Path) -> str:
    """The format a new file gets from its suffix (``.csv`` is the project's schema, not a motive list)."""
    by_suffix = {".csv": "csv", ".txt": "csv", ".star": "star", ".json": "json", ".ndjson": "ndjson", ".motl": "motl",
                 ".tbl": "tbl"}
    if path.suffix.lower() not in by_suffix:
        raise InputError(f"cannot tell the table format from the suffix {path.suffix!r}; use .csv, .star, .json, "
                         f".ndjson or .tbl (or give the format; a copick project is a directory)", path)
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
            raise VoxelSizeNeeded(f"table has only {have} coordinates; give the voxel size to derive the others", path)
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
            raise VoxelSizeNeeded("STAR file records no pixel size; give the voxel size", path)
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
        orientation.set_rotations(out, orientation.rotations_from_relion(particles[_STAR_ANGLES].to_numpy(dtype=np.float64)))
    return out


def _star_pixel_size(blocks: Mapping[str, pd.DataFrame], particles: pd.DataFrame) -> float | None:
    for df in [particles, *blocks.values()]:
        for col in _STAR_PIXEL_SIZE:
            if col in df.columns and len(df):
                return float(df[col].iloc[0])
    return None


def _write_star(
    df: pd.DataFrame,
    path: Path,
    *,
    voxel_size=None,
    shape=None,
    shapes=None,
    tilt_series_pixel_size=None,
    target=None,
    **_: Any,
) -> None:
    """RELION STAR: pixel coordinates in tomogram voxels, centred Angstrom where shapes are known.

    ``rlnTomoTiltSeriesPixelSize`` is ``tilt_series_pixel_size``; without it the tomogram voxel size
    is assumed, which a comment line in the file and a warning say.
    """
    import starfile

    vs = as_voxel_size(voxel_size) if voxel_size is not None else _voxel_size_from_table(df)
    out = pd.DataFrame({_STAR_TOMO: df["tomo"].to_numpy()})
    for c, dst in zip(VOXEL, _STAR_PX):
        out[dst] = df[c].to_numpy()
    centred = _centred_angstrom(df, vs, shape, shapes)
    if centred is not None:
        for i, dst in enumerate(_STAR_CENTRED):
            out[dst] = centred[:, i]
    for ours, theirs in _STAR_EXTRA.items():
        if ours in df.columns:
            out[theirs] = df[ours].to_numpy()
    if orientation.has_angles(df):
        angles = orientation.relion_from_table(df)
        for i, dst in enumerate(_STAR_ANGLES):
            out[dst] = angles[:, i]
    note = ""
    if vs is not None:
        out[_STAR_VOXEL] = vs[2]
        ts = tilt_series_pixel_size
        if ts is None:
            ts = vs[2]
            note = (f"rlnTomoTiltSeriesPixelSize assumed equal to the tomogram voxel size ({vs[2]:g} A): "
                    f"the tilt-series pixel size was not given")
            if vs[2] not in _ASSUMED_TS_PIXEL:  # once per process and size: a run writes many STAR files
                _ASSUMED_TS_PIXEL.add(vs[2])
                log.warning("%s: %s (--tilt-series-pixel-size sets it)", target or path, note)
        out[_STAR_TS_PIXEL] = float(ts)
    starfile.write({"particles": out}, path, float_format=None)
    if note:
        text = path.read_text(encoding="utf-8")
        path.write_text(f"# {note}\n{text}", encoding="utf-8")


def _centred_angstrom(df: pd.DataFrame, vs, shape, shapes) -> np.ndarray | None:
    """(N, 3) RELION 5 centred x, y, z in Angstrom, ``(voxel - shape/2) * voxel_size``; None if unknown."""
    if vs is None or (shape is None and not shapes):
        return None
    tomos = df["tomo"].astype(str).to_numpy()
    if shape is None:
        missing = sorted(set(tomos) - set(shapes))
        if missing:
            log.warning("no shape for tomogram(s) %s: the STAR file has no rlnCenteredCoordinate columns", missing)
            return None
        sizes = np.array([np.asarray(shapes[t], dtype=np.float64)[::-1] for t in tomos]).reshape(-1, 3)
    else:
        sizes = np.broadcast_to(np.asarray(shape, dtype=np.float64)[::-1], (len(df), 3))
    xyz = df[VOXEL].to_numpy(dtype=np.float64)
    return (xyz - sizes / 2.0) * np.asarray(vs, dtype=np.float64)[::-1]


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


# ----------------------------------------------------------------------------------------------
# copick JSON (Angstrom)
# ----------------------------------------------------------------------------------------------


COPICK_CONFIG = "copick_config.json"


def _read_copick(path: Path, *, voxel_size=None, **_: Any) -> pd.DataFrame:
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
                  session_id: str = "0", **_: Any) -> None:
    """One copick point file; orientations as copick's 4x4 matrices (see :mod:`.orientation`)."""
    tomos, classes = df["tomo"].unique(), df["class"].unique()
    vs = as_voxel_size(voxel_size) if voxel_size is not None else _voxel_size_from_table(df)
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


def _is_copick_dir(path: Path) -> bool:
    return (path / COPICK_CONFIG).is_file() or (path / "ExperimentRuns").is_dir()


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
        voxel_size = _voxel_size_from_table(df)
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


# ----------------------------------------------------------------------------------------------
# CryoET Data Portal NDJSON (voxels)
# ----------------------------------------------------------------------------------------------


def _read_ndjson(path: Path, *, voxel_size=None, tomo=None, **_: Any) -> pd.DataFrame:
    if voxel_size is None:
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
    df = make_table(tomo or path.stem, [r[3].get("class", "particle") for r in rows], xyz=xyz, voxel_size=voxel_size)
    if rows and all("xyz_rotation_matrix" in r[3] for r in rows):
        mats = np.array([r[3]["xyz_rotation_matrix"] for r in rows], dtype=np.float64)
        orientation.set_rotations(df, orientation.rotations_from_matrices(mats))
    for key in ("score", "instance_id"):
        if rows and all(key in r[3] for r in rows):
            df["score" if key == "score" else "label"] = [r[3][key] for r in rows]
    return df


def _write_ndjson(df: pd.DataFrame, path: Path, **_: Any) -> None:
    """Portal points in voxels; orientations as the portal's ``xyz_rotation_matrix`` (copick's matrix)."""
    oriented = orientation.has_angles(df)
    mats = orientation.matrices_from_table(df) if oriented else None
    with open(path, "w", encoding="utf-8") as fh:
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
        raise VoxelSizeNeeded("motive lists record no voxel size; give the voxel size", path)
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


# ----------------------------------------------------------------------------------------------
# Dynamo table
# ----------------------------------------------------------------------------------------------

# Dynamo's column numbers (1-based, as its documentation counts them) of what we read and write:
# 1 tag, 2 aligned, 3 averaged, 4-6 dx dy dz (shift, pixels), 7-9 tdrot tilt narot (degrees),
# 10 cc (score), 13 ftype, 20 tomo (number), 22 class (number), 24-26 x y z (pixels); 35 columns.
_TBL = {"tag": 1, "aligned": 2, "averaged": 3, "dx": 4, "tdrot": 7, "cc": 10, "tomo": 20, "class": 22, "x": 24}
_TBL_COLUMNS = 35
_TBL_MIN_COLUMNS = 26


def _read_dynamo(path: Path, *, voxel_size=None, tomo=None, class_names=None, **_: Any) -> pd.DataFrame:
    """Dynamo ``.tbl``: position ``x + dx`` etc. in pixels counted from 1 (MATLAB), so minus 1 here.

    Tomograms and classes are numbers in Dynamo; ``tomo`` names a file's only tomogram and
    ``class_names`` maps class numbers to names (otherwise the numbers become the names).
    """
    if voxel_size is None:
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

    tomo_ids = col("tomo")[:, 0].astype(int)
    if tomo is not None and len(set(tomo_ids)) > 1:
        raise InputError(f"the table holds {len(set(tomo_ids))} tomograms (numbers {sorted(set(tomo_ids))}); "
                         f"--tomo can name only one", path)
    names = [tomo if tomo is not None else str(t) for t in tomo_ids]
    cls_names = class_names or {}
    classes = [cls_names.get(int(c), str(int(c))) for c in col("class")[:, 0]]
    xyz = col("x", 3) + col("dx", 3) - 1.0
    df = make_table(names, classes, xyz=xyz, voxel_size=voxel_size, score=col("cc")[:, 0])
    angles = col("tdrot", 3)
    if np.any(angles != 0):
        orientation.set_rotations(df, orientation.rotations_from_dynamo(angles))
    return df


def _write_dynamo(df: pd.DataFrame, path: Path, *, class_ids=None, target=None, **_: Any) -> None:
    """Dynamo ``.tbl``, 35 columns: positions as x, y, z counted from 1 (no shifts), angles as
    ``tdrot, tilt, narot`` (see :mod:`.orientation`), score as cc, tomograms and classes numbered."""
    if class_ids is None:
        class_ids = _numbers(df["class"], "class", target or path)
    tomo_ids = _numbers(df["tomo"], "tomogram", target or path)
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
        raise InputError(f"class {exc} has no number in class_ids", target or path) from exc
    with open(path, "w", encoding="utf-8") as fh:
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
