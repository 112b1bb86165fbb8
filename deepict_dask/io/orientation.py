"""Particle orientations: one internal convention, converted at each file format's boundary.

Internally a table holds ``phi, theta, psi``: intrinsic ZXZ Euler angles in degrees, scipy
``Rotation.from_euler("ZXZ", [phi, theta, psi])``. That rotation R maps the reference (template)
frame into the tomogram frame, both (x, y, z): it rotates the reference onto the particle.

Per format (each converts through rotation matrices, never by shuffling angles):

- copick JSON and CryoET Data Portal NDJSON: the matrix itself, ``R`` (the upper-left 3x3 of
  copick's 4x4 ``transformation_``; the portal's ``xyz_rotation_matrix``). This is what copick's
  RELION converter (``copick.util.relion``) expects: it turns a matrix M into RELION angles with
  ``Rotation.from_matrix(M).inv().as_euler("ZYZ")``.
- RELION STAR ``rlnAngleRot, rlnAngleTilt, rlnAnglePsi``: RELION's ZYZ angles, whose matrix
  (``Rotation.from_euler("ZYZ", angles)``) is the inverse of R; RELION's own matrix A, built from
  passive rotations, equals R and rotates the reference onto the particle.
- Dynamo ``.tbl`` ``tdrot, tilt, narot``: Dynamo's ZXZ angles, built like RELION's (passive
  rotations, same sense), so ``Rotation.from_euler("ZXZ", angles)`` is the inverse of R.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

ANGLES = ["phi", "theta", "psi"]


def _euler(rot: Rotation, seq: str) -> np.ndarray:
    """(N, 3) Euler angles in degrees; at gimbal lock (e.g. no rotation) scipy picks one valid triple."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gimbal lock")
        return rot.as_euler(seq, degrees=True).reshape(-1, 3)


def has_angles(df: pd.DataFrame) -> bool:
    """Whether the table carries the internal Euler angles."""
    return all(c in df.columns for c in ANGLES)


def table_rotations(df: pd.DataFrame) -> Rotation:
    """The rotations R (reference onto particle) of a table's rows; NaN angles count as none."""
    ang = np.nan_to_num(df[ANGLES].to_numpy(dtype=np.float64), nan=0.0).reshape(-1, 3)
    return Rotation.from_euler("ZXZ", ang, degrees=True)


def set_rotations(df: pd.DataFrame, rot: Rotation) -> None:
    """Store rotations R in the table's ``phi, theta, psi`` columns (in place)."""
    eul = _euler(rot, "ZXZ") if len(df) else np.zeros((0, 3))
    df["phi"], df["theta"], df["psi"] = eul[:, 0], eul[:, 1], eul[:, 2]


def matrices_from_table(df: pd.DataFrame) -> np.ndarray:
    """(N, 3, 3) matrices R as copick and the portal store them."""
    return table_rotations(df).as_matrix().reshape(-1, 3, 3)


def rotations_from_matrices(mats: np.ndarray) -> Rotation:
    """Rotations from copick / portal matrices (they are R itself)."""
    return Rotation.from_matrix(np.asarray(mats, dtype=np.float64).reshape(-1, 3, 3))


def relion_from_table(df: pd.DataFrame) -> np.ndarray:
    """(N, 3) RELION ``rot, tilt, psi`` (degrees) of the table's rotations."""
    return _euler(table_rotations(df).inv(), "ZYZ")


def rotations_from_relion(angles: np.ndarray) -> Rotation:
    """Rotations R from RELION ``rot, tilt, psi`` (degrees)."""
    return Rotation.from_euler("ZYZ", np.asarray(angles, dtype=np.float64).reshape(-1, 3), degrees=True).inv()


def dynamo_from_table(df: pd.DataFrame) -> np.ndarray:
    """(N, 3) Dynamo ``tdrot, tilt, narot`` (degrees) of the table's rotations."""
    return _euler(table_rotations(df).inv(), "ZXZ")


def rotations_from_dynamo(angles: np.ndarray) -> Rotation:
    """Rotations R from Dynamo ``tdrot, tilt, narot`` (degrees)."""
    return Rotation.from_euler("ZXZ", np.asarray(angles, dtype=np.float64).reshape(-1, 3), degrees=True).inv()
