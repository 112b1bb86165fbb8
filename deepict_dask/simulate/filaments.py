"""Filaments: tubes following smooth random curves, with their centreline as ground truth.

A centreline is grown in both directions from a random seed point by a persistent random walk
(step ``STEP`` Angstrom, direction diffusing with the filament's stiffness) until it leaves the ice,
comes near a membrane or another filament, or reaches its maximum length. Rendering uses the distance
to the nearest centreline point (points are ``STEP`` apart, so the distance error is below STEP/2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .shapes import FILAMENT_PROFILES, filament_density

STEP = 5.0
#: Angular diffusion per step (radians) — microtubules are far stiffer than actin.
BENDING = {"microtubule": 0.004, "actin": 0.02}


@dataclass
class Filament:
    kind: str
    points: np.ndarray  # (N, 3) x, y, z Angstrom, STEP apart

    @property
    def radius(self) -> float:
        return FILAMENT_PROFILES[self.kind][0]

    @property
    def length(self) -> float:
        return STEP * (len(self.points) - 1)


def grow_filament(
    kind: str,
    start: np.ndarray,
    direction: np.ndarray,
    rng: np.random.Generator,
    allowed: Callable[[np.ndarray], bool],
    max_length: float,
) -> Filament:
    """Grow a centreline from ``start`` both ways while ``allowed(point)`` holds."""
    sigma = BENDING[kind]
    halves = []
    for sign in (1.0, -1.0):
        d = sign * direction / np.linalg.norm(direction)
        p = np.asarray(start, float).copy()
        pts = []
        for _ in range(int(max_length / 2 / STEP)):
            d = d + rng.normal(scale=sigma, size=3)
            d /= np.linalg.norm(d)
            q = p + STEP * d
            if not allowed(q):
                break
            pts.append(q)
            p = q
        halves.append(pts)
    pts = halves[1][::-1] + [np.asarray(start, float)] + halves[0]
    return Filament(kind, np.array(pts))


def render_filament(
    fil: Filament, lo: np.ndarray, shape, voxel_size: float, dist_out: np.ndarray
) -> None:
    """Lower ``dist_out`` (block of distances to this filament kind) near the centreline, in place."""
    reach = fil.radius + 3 * voxel_size
    shape = np.asarray(shape)
    piece = max(4, int(2 * voxel_size / STEP) * 4)
    for k in range(0, len(fil.points), piece):
        seg = fil.points[k : k + piece + 1]
        p_lo = np.floor((seg.min(0)[::-1] - reach) / voxel_size).astype(int) - lo
        p_hi = np.ceil((seg.max(0)[::-1] + reach) / voxel_size).astype(int) + 1 - lo
        p_lo = np.maximum(p_lo, 0)
        p_hi = np.minimum(p_hi, shape)
        if np.any(p_hi <= p_lo):
            continue
        z = (lo[0] + np.arange(p_lo[0], p_hi[0])) * voxel_size
        y = (lo[1] + np.arange(p_lo[1], p_hi[1])) * voxel_size
        x = (lo[2] + np.arange(p_lo[2], p_hi[2])) * voxel_size
        d2 = np.full((len(z), len(y), len(x)), np.inf, dtype=np.float32)
        for q in seg:
            dd = (z[:, None, None] - q[2]) ** 2 + (y[None, :, None] - q[1]) ** 2 + (x[None, None, :] - q[0]) ** 2
            np.minimum(d2, dd, out=d2)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(p_lo, p_hi))
        np.minimum(dist_out[sl], np.sqrt(d2), out=dist_out[sl])


def filament_block(
    filaments: list[Filament], lo: np.ndarray, shape, voxel_size: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(density, {kind: mask}) of all filaments in a block; a mask is the filled tube (lumen included)."""
    density = np.zeros(tuple(shape), np.float32)
    masks: dict[str, np.ndarray] = {}
    for kind in FILAMENT_PROFILES:
        fils = [f for f in filaments if f.kind == kind]
        if not fils:
            continue
        dist = np.full(tuple(shape), np.inf, np.float32)
        for f in fils:
            render_filament(f, lo, shape, voxel_size, dist)
        near = np.isfinite(dist)
        if not near.any():
            continue
        density[near] += filament_density(kind, dist[near])
        masks[kind] = dist <= max(FILAMENT_PROFILES[kind][0], 0.6 * voxel_size)
    return density, masks
