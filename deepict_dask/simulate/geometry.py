"""Rotations and the Euler-angle convention of the truth tables.

Angles ``phi, theta, psi`` (degrees) are intrinsic ZXZ rotations (scipy's ``"ZXZ"``): the matrix
``R = Rz(phi) @ Rx(theta) @ Rz(psi)`` maps a vector from the particle frame into the tomogram frame,
both written as ``(x, y, z)``. A particle blob at ``c`` (particle frame) sits at ``centre + R @ c``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def random_rotations(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly distributed rotations: (matrices (n, 3, 3), ZXZ Euler angles (n, 3) degrees)."""
    if n == 0:
        return np.zeros((0, 3, 3)), np.zeros((0, 3))
    rot = Rotation.random(n, random_state=rng)
    return rot.as_matrix(), rot.as_euler("ZXZ", degrees=True)


def rotations_from_euler(angles: np.ndarray) -> np.ndarray:
    """Matrices (n, 3, 3) from ZXZ Euler angles (n, 3) in degrees."""
    angles = np.asarray(angles, float).reshape(-1, 3)
    if len(angles) == 0:
        return np.zeros((0, 3, 3))
    return Rotation.from_euler("ZXZ", angles, degrees=True).as_matrix()


def align_z_to(normals: np.ndarray, spins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations taking the particle ``+z`` axis onto each unit normal, with a spin (rad) about it."""
    normals = np.asarray(normals, float).reshape(-1, 3)
    if len(normals) == 0:
        return np.zeros((0, 3, 3)), np.zeros((0, 3))
    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    theta = np.arccos(np.clip(n[:, 2], -1, 1))
    phi = np.arctan2(n[:, 0], -n[:, 1])  # Rz(phi) Rx(theta) e_z = (sin t sin p, -sin t cos p, cos t)
    rot = Rotation.from_euler("ZXZ", np.stack([phi, theta, spins], axis=1))
    return rot.as_matrix(), rot.as_euler("ZXZ", degrees=True)
