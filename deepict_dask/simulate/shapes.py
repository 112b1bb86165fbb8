"""Particle densities built from overlapping Gaussian blobs.

Every particle class is a set of isotropic Gaussian blobs (centre in Angstrom in the particle frame,
width, amplitude). A blob stays a blob under rotation, so a rotated particle is rendered by moving the
blob centres only, and each blob is separable along z, y, x (see :mod:`.render`). The blobs are
arranged so that the classes differ in *shape*, not only in size: a two-lobed ribosome, a closed
FAS barrel with an equatorial wheel and two hollow domes, a four-ring proteasome cylinder and a small
globular protein. Particle frames are ``(x, y, z)`` in Angstrom with the centre of mass at the origin;
the long axis is ``z``.

The amplitude is the contrast of protein over the surrounding ice (about 0.4 for protein at
1.35 g/cm3 in vitreous ice at 0.94 g/cm3), so a filled interior reaches about ``PROTEIN_CONTRAST``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

PROTEIN_CONTRAST = 0.43

#: Class name -> label value in the particle label volume (0 = background). Stable: never renumber.
CLASS_IDS: dict[str, int] = {
    "ribosome": 1,
    "fas": 2,
    "proteasome": 3,
    "globular": 4,
    "microtubule": 5,
    "actin": 6,
}
PARTICLE_CLASSES = ("ribosome", "fas", "proteasome", "globular")
FILAMENT_CLASSES = ("microtubule", "actin")
#: Classes with enclosed cavities (FAS domes, proteasome chambers), filled in their labels.
HOLLOW_CLASSES = ("fas", "proteasome")

#: A voxel belongs to a particle's label where its own density exceeds this fraction of its peak.
LABEL_THRESHOLD = 0.3


@dataclass(frozen=True)
class Template:
    """Blob model of one particle class in its own frame (Angstrom, columns x, y, z)."""

    name: str
    centers: np.ndarray  # (K, 3) x, y, z
    sigmas: np.ndarray  # (K,)
    amps: np.ndarray  # (K,)

    @property
    def radius(self) -> float:
        """Radius of a sphere about the origin that holds the whole labelled particle."""
        return float(np.max(np.linalg.norm(self.centers, axis=1) + 2.5 * self.sigmas))

    def extent_along(self, axis: np.ndarray) -> float:
        """How far the particle reaches from its centre in direction ``-axis`` (for membrane docking)."""
        proj = self.centers @ np.asarray(axis, dtype=float)
        return float(np.max(-proj + 2.0 * self.sigmas))


def _fill_ellipsoid(center, radii, spacing: float) -> np.ndarray:
    """Lattice points inside an ellipsoid (x, y, z Angstrom)."""
    center = np.asarray(center, float)
    radii = np.asarray(radii, float)
    axes = [np.arange(-np.floor(r / spacing), np.floor(r / spacing) + 1) * spacing for r in radii]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = np.sum((g / radii) ** 2, axis=1) <= 1.0
    return g[inside] + center


def _fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _ring(n: int, radius: float, z: float, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a), np.full(n, z)], axis=1)


def _template(name: str, centers: np.ndarray, sigmas, amps) -> Template:
    centers = np.asarray(centers, float)
    sigmas = np.broadcast_to(np.asarray(sigmas, float), (len(centers),)).copy()
    amps = np.broadcast_to(np.asarray(amps, float), (len(centers),)).copy()
    # Centre of mass at the origin (mass of a blob ~ amp * sigma^3).
    w = amps * sigmas**3
    centers = centers - (w[:, None] * centers).sum(0) / w.sum()
    return Template(name, centers, sigmas, amps)


def _blob_amp(spacing: float, sigma: float) -> float:
    """Amplitude so that a lattice of blobs at ``spacing`` fills to about PROTEIN_CONTRAST."""
    return PROTEIN_CONTRAST * spacing**3 / ((2 * np.pi) ** 1.5 * sigma**3)


@cache
def template(name: str) -> Template:
    """The blob model of a particle class (cached; read-only arrays)."""
    if name == "ribosome":
        # ~270 A long: large subunit (LSU) and a smaller, flatter small subunit (SSU) with a cleft
        # between them, plus the L1 and L7/L12 stalks.
        sp, s = 36.0, 20.0
        lsu = _fill_ellipsoid((0, 0, 45), (115, 105, 85), sp)
        ssu = _fill_ellipsoid((10, 15, -75), (100, 70, 50), sp)
        stalks = np.array([[105, 10, 80], [-100, 20, 85], [-115, 25, 100]], float)
        c = np.concatenate([lsu, ssu, stalks])
        sig = np.r_[np.full(len(lsu) + len(ssu), s), [18.0, 16.0, 14.0]]
        amp = np.r_[np.full(len(lsu) + len(ssu), _blob_amp(sp, s)), np.full(3, _blob_amp(sp, s) * 1.5)]
        return _template(name, c, sig, amp)
    if name == "fas":
        # Closed barrel ~250 A (z) x 200 A: a thin shell with an equatorial wheel, hollow domes.
        s = 14.0
        shell = _fibonacci_sphere(240) * np.array([84.0, 84.0, 112.0])
        wheel = _fill_ellipsoid((0, 0, 0), (78, 78, 12), 22.0)
        c = np.concatenate([shell, wheel])
        amp = np.r_[np.full(len(shell), _blob_amp(24.0, s)), np.full(len(wheel), _blob_amp(24.0, s))]
        return _template(name, c, s, amp)
    if name == "proteasome":
        # 20S core: four stacked heptameric rings, ~150 A long, ~110 A wide, narrow central channel.
        s = 15.0
        # The alpha-ring gates are closed (a plug on the axis), so the inner chambers are enclosed.
        rings = [_ring(7, 36.0, z, phase=0.2 * k) for k, z in enumerate((-54.0, -18.0, 18.0, 54.0))]
        gates = np.array([[0, 0, -58.0], [0, 0, 58.0]])
        c = np.concatenate(rings + [gates])
        return _template(name, c, s, _blob_amp(27.0, s) * 1.8)
    if name == "globular":
        # ~85 A, slightly asymmetric so that orientation is not meaningless.
        s = 17.0
        c = np.array([[0, 0, 0], [26, 4, 10], [-14, 24, -8], [-10, -22, 16], [4, -6, -24]], float)
        return _template(name, c, s, _blob_amp(24.0, s) * 2.2)
    raise KeyError(name)


def class_radius(name: str) -> float:
    """Bounding radius (Angstrom) of a particle class, or of a filament's tube."""
    if name in FILAMENT_CLASSES:
        return FILAMENT_PROFILES[name][0]
    return template(name).radius


# Filament tube profile: (outer radius A, radial centre of the wall A, wall width sigma A, amplitude).
# A microtubule is a hollow tube ~250 A wide; actin a solid ~70 A rod.
FILAMENT_PROFILES: dict[str, tuple[float, float, float, float]] = {
    "microtubule": (125.0, 100.0, 14.0, PROTEIN_CONTRAST),
    "actin": (35.0, 0.0, 17.0, PROTEIN_CONTRAST),
}


def filament_density(name: str, dist: np.ndarray) -> np.ndarray:
    """Density of a filament at distance ``dist`` (Angstrom) from its centreline."""
    _, r0, sigma, amp = FILAMENT_PROFILES[name]
    return amp * np.exp(-((dist - r0) ** 2) / (2 * sigma**2))
