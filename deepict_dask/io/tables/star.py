"""``star``: RELION tomography STAR, pixel coordinates and (given shapes) RELION 5 centred Angstrom.

``rlnTomoName``, ``rlnCoordinateX/Y/Z`` in pixels; with shape and voxel size also RELION 5's
``rlnCenteredCoordinateX/Y/ZAngst`` (Angstrom relative to the tomogram centre,
``(voxel - shape/2) * voxel_size``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io import orientation
from deepict_dask.io.tables.registry import TableContext, TableFormat, register_format
from deepict_dask.io.tables.schema import VOXEL, VoxelSizeNeeded, voxel_size_from_table, with_angstrom
from deepict_dask.io.volume import as_voxel_size

log = logging.getLogger(__name__)

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


def read_star(path: Path, ctx: TableContext) -> pd.DataFrame:
    """The first data block with coordinates; the pixel size from the file unless the context gives one."""
    voxel_size, shape = ctx.voxel_size, ctx.shape
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


def write_star(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    """RELION STAR: pixel coordinates in tomogram voxels, centred Angstrom where shapes are known.

    ``rlnTomoTiltSeriesPixelSize`` is the context's ``tilt_series_pixel_size``; without it the
    tomogram voxel size is assumed, which a comment line in the file and a warning say.
    """
    import starfile

    vs = as_voxel_size(ctx.voxel_size) if ctx.voxel_size is not None else voxel_size_from_table(df)
    table = pd.DataFrame({_STAR_TOMO: df["tomo"].to_numpy()})
    for c, dst in zip(VOXEL, _STAR_PX):
        table[dst] = df[c].to_numpy()
    centred = _centred_angstrom(df, vs, ctx.shape, ctx.shapes)
    if centred is not None:
        for i, dst in enumerate(_STAR_CENTRED):
            table[dst] = centred[:, i]
    for ours, theirs in _STAR_EXTRA.items():
        if ours in df.columns:
            table[theirs] = df[ours].to_numpy()
    if orientation.has_angles(df):
        angles = orientation.relion_from_table(df)
        for i, dst in enumerate(_STAR_ANGLES):
            table[dst] = angles[:, i]
    note = ""
    if vs is not None:
        table[_STAR_VOXEL] = vs[2]
        ts = ctx.tilt_series_pixel_size
        if ts is None:
            ts = vs[2]
            note = (f"rlnTomoTiltSeriesPixelSize assumed equal to the tomogram voxel size ({vs[2]:g} A): "
                    f"the tilt-series pixel size was not given")
            if vs[2] not in _ASSUMED_TS_PIXEL:  # once per process and size: a run writes many STAR files
                _ASSUMED_TS_PIXEL.add(vs[2])
                log.warning("%s: %s (--tilt-series-pixel-size sets it)", target, note)
        table[_STAR_TS_PIXEL] = float(ts)
    starfile.write({"particles": table}, out, float_format=None)
    if note:
        text = out.read_text(encoding="utf-8")
        out.write_text(f"# {note}\n{text}", encoding="utf-8")


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


STAR = register_format(TableFormat(
    name="star", suffixes=(".star",), read=read_star, write=write_star,
    description="RELION tomography STAR (pixels; RELION 5 centred Angstrom given the shape)",
    uses=frozenset({"voxel_size", "shape", "shapes", "tilt_series_pixel_size"}),
    wants={"shape": "the STAR file has no rlnCenteredCoordinateX/Y/ZAngst columns, which RELION 5 needs "
                    "(give --shape Z Y X)"},
))
