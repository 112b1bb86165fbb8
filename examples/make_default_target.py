"""Make the default target spectrum shipped as ``deepict_dask/data/target_spectrum.tsv``.

The reference is a synthetic *high-contrast* tomogram (no CTF, no missing wedge, little noise):
a 256^3 box at 5 A/voxel (1280 A across) of cytoplasm-like content in physical units:

* 8 vesicles, 150-450 A radius, with a lipid bilayer profile (two Gaussian leaflets 2 x 20 A apart,
  sigma 7 A, on a weaker core);
* 64 ribosome-like particles, 110-140 A radius, and 160 smaller complexes, 50-80 A radius (about 25 %
  of the volume together), each a lumpy ball (a core plus 6 random lobes);
* 25 straight actin-like filaments, 35 A radius, 300-1000 A long;
* a weak low-frequency "cytosol" texture (white noise smoothed with sigma = 40 A, 15 % of the
  particle contrast) and white noise at 10 % of the total signal's standard deviation.

Structure edges are softened with a 4 A Gaussian (no sharper detail exists at 5 A sampling). The
volume is normalized and its Welch radial amplitude spectrum (128^3 windows, 27 of them; smooth,
with 1/640 A^-1 resolution; ``deepict_dask.preprocess``) is written with the recipe in its header. A 5 A target covers tomograms with voxels of 2.5 A or more at the
default low-pass cutoff (0.5 Nyquist), and 5 A or more with no low-pass at all.

Run: ``python examples/make_default_target.py [OUT.tsv]`` (about a minute, 1 GB of memory).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

SHAPE = (256, 256, 256)
VOXEL = 5.0
SEED = 20240611


def _grid(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.arange(a, b, dtype=np.float32)[(slice(None),) + (None,) * (2 - i)] for i, (a, b) in enumerate(zip(lo, hi)))


def _box(center: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    lo = np.maximum(np.floor(center - reach).astype(int), 0)
    hi = np.minimum(np.ceil(center + reach).astype(int) + 1, SHAPE)
    return lo, hi


def add_vesicles(vol: np.ndarray, rng: np.random.Generator, n: int = 8) -> None:
    for _ in range(n):
        radius = rng.uniform(150, 450) / VOXEL
        center = rng.uniform(0, SHAPE)
        lo, hi = _box(center, radius + 10)
        z, y, x = _grid(lo, hi)
        d = (np.sqrt((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2) - radius) * VOXEL
        profile = np.exp(-((d - 20) ** 2) / (2 * 7**2)) + np.exp(-((d + 20) ** 2) / (2 * 7**2)) + 0.3 * np.exp(-(d**2) / (2 * 12**2))
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += 1.5 * profile


def particle_template(rng: np.random.Generator, r_min: float, r_max: float) -> np.ndarray:
    radius = rng.uniform(r_min, r_max) / VOXEL
    size = int(2 * radius + 8) | 1
    c = size // 2
    z, y, x = np.mgrid[:size, :size, :size].astype(np.float32) - c
    ball = (z**2 + y**2 + x**2) <= (0.75 * radius) ** 2
    for _ in range(6):
        off = rng.normal(size=3)
        off *= 0.45 * radius / np.linalg.norm(off)
        r = rng.uniform(0.35, 0.55) * radius
        ball |= ((z - off[0]) ** 2 + (y - off[1]) ** 2 + (x - off[2]) ** 2) <= r**2
    return ball.astype(np.float32)


def add_particles(vol: np.ndarray, rng: np.random.Generator, n: int, r_min: float, r_max: float, kinds: int = 4) -> None:
    for _ in range(kinds):
        points = np.zeros(SHAPE, np.float32)
        idx = tuple(rng.integers(0, s, n // kinds) for s in SHAPE)
        points[idx] = 1.0
        vol += signal.fftconvolve(points, particle_template(rng, r_min, r_max), mode="same").astype(np.float32)


def add_filaments(vol: np.ndarray, rng: np.random.Generator, n: int = 25) -> None:
    radius = 35 / VOXEL
    for _ in range(n):
        a = rng.uniform(0, SHAPE)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        length = rng.uniform(300, 1000) / VOXEL
        b = a + direction * length
        lo = np.maximum(np.floor(np.minimum(a, b) - radius - 3).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(a, b) + radius + 3).astype(int) + 1, SHAPE)
        if np.any(hi <= lo):
            continue
        z, y, x = _grid(lo, hi)
        pz, py, px = z - a[0], y - a[1], x - a[2]
        t = np.clip(pz * direction[0] + py * direction[1] + px * direction[2], 0, length)
        d2 = (pz - t * direction[0]) ** 2 + (py - t * direction[1]) ** 2 + (px - t * direction[2]) ** 2
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += (d2 <= radius**2).astype(np.float32)


def synthetic_tomogram(seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.zeros(SHAPE, np.float32)
    add_particles(vol, rng, 64, 110, 140)
    add_particles(vol, rng, 160, 50, 80)
    add_filaments(vol, rng)
    vol = ndimage.gaussian_filter(vol, 4 / VOXEL)
    add_vesicles(vol, rng)
    texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 40 / VOXEL)
    vol += 0.15 * texture / texture.std()
    vol += 0.1 * vol.std() * rng.standard_normal(SHAPE).astype(np.float32)
    return vol


def main(out: Path) -> None:
    from deepict_dask.io.volume import make_volume
    from deepict_dask.preprocess import normalize, radial_spectrum, write_spectrum

    vol = make_volume(synthetic_tomogram(), VOXEL, chunks=128, attrs={"source": "synthetic"})
    spec = radial_spectrum(normalize(vol), method="welch", window=128)
    spec.attrs.clear()
    spec.attrs.update(
        {
            "made_by": "examples/make_default_target.py",
            "reference": f"synthetic high-contrast tomogram {SHAPE} at {VOXEL} A/voxel, seed {SEED} "
            "(vesicles, ribosome-like particles, filaments, weak texture, 10 % white noise; no CTF, no wedge)",
            "method": "welch, 128^3 windows",
            "voxel_size": (VOXEL,) * 3,
        }
    )
    write_spectrum(spec, out)
    print(f"wrote {out} ({len(spec)} shells)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "deepict_dask/data/target_spectrum.tsv")
