"""Blending overlapping window predictions into one block of the output.

Each window's prediction is multiplied by its weight (the outer product of the per-axis profiles
of :mod:`.windows`) and added into the block; the sum of weights divides it at the end. For the
``crop`` profile exactly one window has weight 1 at each voxel of a tiled grid, so the result is
that window's core, bit for bit.
"""

from __future__ import annotations

import numpy as np

from deepict_dask.inference.windows import AxisGrid


def window_weight(grids: tuple[AxisGrid, ...]) -> np.ndarray:
    """Full weight array of one window (outer product of the per-axis profiles)."""
    w = np.ones((), dtype=np.float32)
    for g in grids:
        w = np.multiply.outer(w, np.asarray(g.profile, dtype=np.float32))
    return w


class BlockAccumulator:
    """Weighted sum of window predictions restricted to one output block."""

    def __init__(self, n_channels: int, grids: tuple[AxisGrid, ...], bounds: tuple[tuple[int, int], ...]):
        self.grids = grids
        self.bounds = bounds
        shape = tuple(hi - lo for lo, hi in bounds)
        self.acc = np.zeros((n_channels,) + shape, dtype=np.float32)
        self.wsum = np.zeros(shape, dtype=np.float32)
        self.weight = window_weight(grids)

    def add(self, start: tuple[int, ...], pred: np.ndarray) -> None:
        """Add one window's prediction ``pred`` (channels, *window) whose corner is ``start``."""
        src, dst = [], []
        for g, s, (lo, hi) in zip(self.grids, start, self.bounds):
            a = max(lo, s + g.support[0])
            b = min(hi, s + g.support[1])
            if a >= b:
                return
            src.append(slice(a - s, b - s))
            dst.append(slice(a - lo, b - lo))
        w = self.weight[tuple(src)]
        self.acc[(slice(None), *dst)] += pred[(slice(None), *src)] * w
        self.wsum[tuple(dst)] += w

    def result(self) -> np.ndarray:
        if not (self.wsum > 0).all():
            raise RuntimeError("window grid leaves voxels of the block uncovered")
        return self.acc / self.wsum
