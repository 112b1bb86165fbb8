"""Membranes as implicit surfaces: a signed distance, a bilayer profile and a mask.

Each surface gives an (approximate, exact near the surface) signed distance in Angstrom, negative on
its *inner* side (vesicle or organelle lumen; for the plasma-membrane sheet, the extracellular side).
A bilayer is two dense head-group leaflets ``LEAFLET_SEPARATION`` apart with a slightly lighter
hydrophobic core; the membrane mask is ``|d| <= MEMBRANE_HALF_WIDTH`` (at least ~0.6 voxel, so that a
membrane is never thinner than one voxel in the mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEAFLET_SEPARATION = 40.0
LEAFLET_SIGMA = 7.0
LEAFLET_CONTRAST = 0.5
CORE_CONTRAST = -0.1
MEMBRANE_HALF_WIDTH = 30.0


def membrane_half_width(voxel_size: float) -> float:
    return max(MEMBRANE_HALF_WIDTH, 0.6 * voxel_size)


def bilayer_density(d: np.ndarray, voxel_size: float) -> np.ndarray:
    """Density of a bilayer at signed distance ``d`` (Angstrom), widened by the voxel footprint."""
    s = float(np.sqrt(LEAFLET_SIGMA**2 + (0.4 * voxel_size) ** 2))
    a = LEAFLET_CONTRAST * LEAFLET_SIGMA / s
    h = LEAFLET_SEPARATION / 2
    core_s = float(np.sqrt(10.0**2 + (0.4 * voxel_size) ** 2))
    return (
        a * (np.exp(-((d - h) ** 2) / (2 * s**2)) + np.exp(-((d + h) ** 2) / (2 * s**2)))
        + CORE_CONTRAST * 10.0 / core_s * np.exp(-(d**2) / (2 * core_s**2))
    ).astype(np.float32)


@dataclass
class Surface:
    """Base: ``kind`` (vesicle, organelle_outer, organelle_inner, plasma), compartment code inside."""

    kind: str
    inner_compartment: int

    def signed_distance(self, x, y, z) -> np.ndarray:  # pragma: no cover - abstract
        """Signed distance (Angstrom) at broadcastable x, y, z coordinates (Angstrom)."""
        raise TypeError("abstract")

    def distance_at(self, pts_xyz: np.ndarray) -> np.ndarray:
        p = np.asarray(pts_xyz, float).reshape(-1, 3)
        return self.signed_distance(p[:, 0], p[:, 1], p[:, 2])

    def bbox(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) x, y, z Angstrom of the surface, or None if it spans the whole volume."""
        return None

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise TypeError("abstract")


@dataclass
class Ellipsoid(Surface):
    """A (rotated) ellipsoid: vesicles (all radii equal) and organelle envelopes."""

    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radii: np.ndarray = field(default_factory=lambda: np.ones(3))
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))

    def signed_distance(self, x, y, z):
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        q2 = 0.0
        g2 = 0.0
        for i in range(3):  # coordinates in the ellipsoid frame, scaled by the radii
            u = (dx * self.rot[0, i] + dy * self.rot[1, i] + dz * self.rot[2, i]) / self.radii[i]
            q2 = q2 + u * u
            g2 = g2 + (u / self.radii[i]) ** 2
        q = np.sqrt(q2)
        grad = np.sqrt(g2) / np.maximum(q, 1e-9)
        return (q - 1.0) / np.maximum(grad, 1e-12)

    def bbox(self):
        ext = np.sqrt(np.sum((self.rot * self.radii) ** 2, axis=1))  # half extents along x, y, z
        return self.center - ext, self.center + ext

    def sample(self, rng, n):
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        local = v * self.radii
        normal_local = local / self.radii**2
        pts = local @ self.rot.T + self.center
        normals = normal_local @ self.rot.T
        return pts, normals / np.linalg.norm(normals, axis=1, keepdims=True)


@dataclass
class Sheet(Surface):
    """A gently undulating plasma-membrane-like sheet ``x = x0 + a1 sin(..y) + a2 sin(..z)``.

    The extracellular side (``x`` below the sheet) is the inner (negative) side.
    """

    x0: float = 0.0
    amp: tuple[float, float] = (0.0, 0.0)
    wavelength: tuple[float, float] = (1.0, 1.0)
    phase: tuple[float, float] = (0.0, 0.0)

    def _h(self, y, z):
        ky, kz = 2 * np.pi / self.wavelength[0], 2 * np.pi / self.wavelength[1]
        h = self.x0 + self.amp[0] * np.sin(ky * y + self.phase[0]) + self.amp[1] * np.sin(kz * z + self.phase[1])
        dh_dy = self.amp[0] * ky * np.cos(ky * y + self.phase[0])
        dh_dz = self.amp[1] * kz * np.cos(kz * z + self.phase[1])
        return h, dh_dy, dh_dz

    def signed_distance(self, x, y, z):
        h, gy, gz = self._h(y, z)
        return (x - h) / np.sqrt(1 + gy**2 + gz**2)

    def sample_yz(self, rng, n, y_range, z_range):
        y = rng.uniform(*y_range, size=n)
        z = rng.uniform(*z_range, size=n)
        h, gy, gz = self._h(y, z)
        pts = np.stack([h, y, z], axis=1)
        normals = np.stack([np.ones(n), -gy, -gz], axis=1)
        return pts, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def grid_points(lo: np.ndarray, shape, voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open (broadcastable) x, y, z Angstrom coordinates of a block starting at voxel ``lo`` (z, y, x)."""
    z = ((lo[0] + np.arange(shape[0])) * voxel_size).astype(np.float32)
    y = ((lo[1] + np.arange(shape[1])) * voxel_size).astype(np.float32)
    x = ((lo[2] + np.arange(shape[2])) * voxel_size).astype(np.float32)
    return x[None, None, :], y[None, :, None], z[:, None, None]


def surface_distance_on_block(surface: Surface, lo: np.ndarray, shape, voxel_size: float, reach: float):
    """Signed distance on the part of a block near the surface: (slices into the block, d) or None."""
    shape = np.asarray(shape)
    sub_lo = np.zeros(3, int)
    sub_hi = shape.copy()
    box = surface.bbox()
    if box is not None:
        b_lo = np.floor((box[0][::-1] - reach) / voxel_size).astype(int) - lo
        b_hi = np.ceil((box[1][::-1] + reach) / voxel_size).astype(int) + 1 - lo
        sub_lo = np.maximum(sub_lo, b_lo)
        sub_hi = np.minimum(sub_hi, b_hi)
        if np.any(sub_hi <= sub_lo):
            return None
    x, y, z = grid_points(lo + sub_lo, sub_hi - sub_lo, voxel_size)
    d = np.empty(tuple(sub_hi - sub_lo), dtype=np.float32)
    for k in range(0, d.shape[0], 16):  # z-slabs bound the temporaries
        d[k : k + 16] = surface.signed_distance(x, y, z[k : k + 16])
    sl = tuple(slice(int(a), int(b)) for a, b in zip(sub_lo, sub_hi))
    return sl, d
