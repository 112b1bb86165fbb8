"""Sliding-window grids anchored to the whole volume, never to a Dask block.

Every axis gets its own 1D grid: window starts in *global* voxel coordinates (they may be
negative or run past the end; that input is reflected) and a weight profile over the window.
A voxel's prediction is the weighted mean over the windows that cover it, so any block of the
output can be computed on its own from exactly the windows that touch it, and the result does not
depend on the chunking.

* ``tiled`` (3D, DeePiCt boxes): window ``P`` with margin ``m`` per side; the cores
  (``P - 2m``) tile the volume from voxel 0, so with the ``crop`` profile each voxel belongs to
  exactly one window core (margins that fall outside the volume read reflected input).
* ``even`` (DeePiCt 2D tiles): as many cores as needed, evenly spaced so the first starts at 0
  and the last ends at ``N``; overlapping cores are averaged.
* ``slices``: one window per voxel of width 1 (the z axis of a 2D model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np

BLENDS = ("crop", "gaussian")


@dataclass(frozen=True)
class AxisGrid:
    """Windows along one axis of a volume of length ``size``."""

    size: int
    window: int
    starts: tuple[int, ...]
    profile: tuple[float, ...]  # weight of each position inside a window
    support: tuple[int, int]  # [lo, hi) offsets inside the window where the weight is > 0

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    def touching(self, lo: int, hi: int) -> range:
        """Indices of the windows whose weighted part intersects ``[lo, hi)``."""
        s = np.asarray(self.starts)
        a, b = self.support
        idx = np.nonzero((s + a < hi) & (s + b > lo))[0]
        return range(int(idx[0]), int(idx[-1]) + 1) if idx.size else range(0)

    def extent(self, windows: range) -> tuple[int, int]:
        """Global input range ``[lo, hi)`` read by a run of consecutive windows."""
        return self.starts[windows[0]], self.starts[windows[-1]] + self.window


def gaussian_profile(window: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """nnU-Net style importance weights: a Gaussian centred on the window, never exactly zero."""
    c = (window - 1) / 2
    sigma = max(window * sigma_scale, 1e-6)
    g = np.exp(-0.5 * ((np.arange(window) - c) / sigma) ** 2)
    g /= g.max()
    return np.maximum(g, g[g > 0].min() if (g > 0).any() else 1.0)


def crop_profile(window: int, margin: int) -> np.ndarray:
    w = np.zeros(window)
    w[margin : window - margin] = 1.0
    return w


def axis_grid(size: int, window: int, margin: int, *, layout: str = "tiled", blend: str = "crop") -> AxisGrid:
    """Build the window grid of one axis (see module docstring for the layouts)."""
    if layout == "slices":
        return AxisGrid(size, 1, tuple(range(size)), (1.0,), (0, 1))
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    core = window - 2 * margin
    if core < 1:
        raise ValueError(f"window {window} leaves no core after a margin of {margin} per side")
    if layout == "tiled":
        core_starts = [k * core for k in range(max(1, math.ceil(size / core)))]
    elif layout == "even":
        n = max(1, math.ceil(size / core))
        span = max(size - core, 0)
        core_starts = [round(k * span / (n - 1)) if n > 1 else 0 for k in range(n)]
    else:
        raise ValueError(f"unknown window layout {layout!r}")
    profile = crop_profile(window, margin) if blend == "crop" else gaussian_profile(window)
    nz = np.nonzero(profile > 0)[0]
    return AxisGrid(
        size=size,
        window=window,
        starts=tuple(int(c - margin) for c in core_starts),
        profile=tuple(float(v) for v in profile),
        support=(int(nz[0]), int(nz[-1]) + 1),
    )


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map global indices (possibly outside ``[0, n)``) into the volume by mirror reflection.

    Same convention as ``numpy.pad(mode="reflect")`` (edge voxel not repeated), extended
    periodically so that windows larger than the volume still read valid data.
    """
    idx = np.asarray(idx)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    r = np.mod(idx, period)
    return np.where(r >= n, period - r, r)


def block_windows(grids: tuple[AxisGrid, ...], bounds: tuple[tuple[int, int], ...]) -> list[range]:
    """Per axis, the windows needed for the output block ``bounds`` (one ``(lo, hi)`` per axis)."""
    return [g.touching(lo, hi) for g, (lo, hi) in zip(grids, bounds)]


def window_starts(grids: tuple[AxisGrid, ...], runs: list[range]) -> list[tuple[int, ...]]:
    """All window start corners (global coordinates) of the product of per-axis runs."""
    return [tuple(g.starts[k] for g, k in zip(grids, ks)) for ks in product(*runs)]


def aligned_chunks(size: int, grid: AxisGrid, target: int) -> tuple[int, ...]:
    """Chunking of an axis close to ``target`` whose boundaries fall on core boundaries.

    With the ``tiled`` layout and crop blending no window is then computed by two blocks.
    """
    if grid.window == 1 or len(grid.starts) < 2:
        step = 1 if grid.window == 1 else size
    else:
        step = grid.starts[1] - grid.starts[0]
    n = max(1, round(target / step)) * step
    n = min(n, size)
    full, rest = divmod(size, n)
    return (n,) * full + ((rest,) if rest else ())
