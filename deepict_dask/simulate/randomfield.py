"""Random fields that are a pure function of (seed, stream, global voxel position).

Noise and the unresolved "crowder" texture must not depend on how a large volume is cut into blocks
(a block's halo must see exactly what its neighbour generates). Space is tiled into fixed
``TILE``-voxel cubes, each with its own generator seeded by (seed, stream, tile index); a block
generates the tiles it touches and crops them, so the same voxel gets the same value in any block.
"""

from __future__ import annotations

import numpy as np

TILE = 32
_OFFSET = 1 << 20  # tile indices may be negative (halos outside the volume)


def _field(seed: int, stream: int, lo, shape, draw) -> np.ndarray:
    lo = np.asarray(lo, int)
    shape = np.asarray(shape, int)
    out = np.empty(tuple(shape), np.float32)
    t_lo = np.floor_divide(lo, TILE)
    t_hi = np.floor_divide(lo + shape - 1, TILE)
    for tz in range(t_lo[0], t_hi[0] + 1):
        for ty in range(t_lo[1], t_hi[1] + 1):
            for tx in range(t_lo[2], t_hi[2] + 1):
                t = np.array([tz, ty, tx])
                ss = np.random.SeedSequence([int(seed), int(stream)] + [int(v + _OFFSET) for v in t])
                tile = draw(np.random.default_rng(ss))
                a0 = np.maximum(t * TILE, lo)
                a1 = np.minimum((t + 1) * TILE, lo + shape)
                src = tuple(slice(int(a - b), int(c - b)) for a, c, b in zip(a0, a1, t * TILE))
                dst = tuple(slice(int(a - b), int(c - b)) for a, c, b in zip(a0, a1, lo))
                out[dst] = tile[src]
    return out


def uniform(seed: int, stream: int, lo, shape) -> np.ndarray:
    """Uniform [0, 1) float32 values for the block of voxels ``lo .. lo + shape`` (z, y, x)."""
    return _field(seed, stream, lo, shape, lambda g: g.random((TILE,) * 3, dtype=np.float32))


def normal(seed: int, stream: int, lo, shape) -> np.ndarray:
    """Standard normal float32 values for the block of voxels ``lo .. lo + shape``."""
    return _field(seed, stream, lo, shape, lambda g: g.standard_normal((TILE,) * 3, dtype=np.float32))
