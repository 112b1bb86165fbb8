"""Blending overlapping window predictions into one block of the output.

Each window's prediction is multiplied by its weight (the outer product of the per-axis profiles
of :mod:`.windows`) and added into the block; the sum of weights divides it at the end. For the
``crop`` profile exactly one window has weight 1 at each voxel of a tiled grid, so the result is
that window's core, bit for bit.

The accumulator is made of torch tensors on the device it is given (the engine gives the
predictor's): on a GPU the windows are blended where they were computed and only the finished
block travels back to the host.
"""

from __future__ import annotations

import numpy as np
import torch

from deepict_dask.inference.windows import AxisGrid


def window_weight(grids: tuple[AxisGrid, ...]) -> np.ndarray:
    """Full weight array of one window (outer product of the per-axis profiles)."""
    w = np.ones((), dtype=np.float32)
    for g in grids:
        w = np.multiply.outer(w, np.asarray(g.profile, dtype=np.float32))
    return w


class BlockAccumulator:
    """Weighted sum of window predictions restricted to one output block, on ``device``."""

    def __init__(self, n_channels: int, grids: tuple[AxisGrid, ...], bounds: tuple[tuple[int, int], ...],
                 device: str | torch.device = "cpu"):
        self.grids = grids
        self.bounds = bounds
        shape = tuple(hi - lo for lo, hi in bounds)
        self.acc = torch.zeros((n_channels,) + shape, dtype=torch.float32, device=device)
        self.wsum = torch.zeros(shape, dtype=torch.float32, device=device)
        self.weight = torch.from_numpy(window_weight(grids)).to(device)

    def add(self, start: tuple[int, ...], pred: torch.Tensor) -> None:
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

    def result(self) -> torch.Tensor:
        if not bool((self.wsum > 0).all()):
            raise RuntimeError("window grid leaves voxels of the block uncovered")
        return self.acc / self.wsum
