"""Block tasks that read their own input region straight from the stored tomogram.

Why: a ``map_overlap`` over chunk tasks makes Dask keep the pieces of every chunk that a later
block still needs (halos, Welch look-ahead, the far faces for a periodic boundary). Blocks run in
raster order, so a worker then holds a whole plane of pieces: memory grows with the tomogram's
cross-section. When the volume is exactly an array in a file (MRC memmap, Zarr), each task instead
reads its region (halo included) from the file and z-scores it itself; tasks share no data, and a
worker holds one region per running task whatever the volume size, at the price of reading the
halos twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

import dask.array as da
import numpy as np

from deepict_dask.io.volume import stored_source
from deepict_dask.preprocess.normalize import zscore


@dataclass(frozen=True)
class StoredInput:
    """A tomogram in a file, z-scored with ``mean`` and ``std`` as each region is read.

    Small (the array handle, not its data), so every task carries its own copy.
    """

    source: Any
    shape: tuple[int, int, int]
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, data: Any, normalization: tuple[float, float] | None = None) -> StoredInput | None:
        """The stored input behind ``data`` (a dask array read straight from a file), else ``None``."""
        if not isinstance(data, da.Array):
            return None
        source = stored_source(data)
        if source is None:
            return None
        mean, std = normalization if normalization is not None else (0.0, 1.0)
        return cls(source, tuple(int(n) for n in data.shape), float(mean), float(std))

    def read(self, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
        """Voxels ``lo:hi`` (float32, z-scored); indices outside the volume wrap around (periodic)."""
        out = np.empty(tuple(b - a for a, b in zip(lo, hi)), dtype=np.float32)
        runs = [axis_runs(a, b, n) for a, b, n in zip(lo, hi, self.shape)]
        for pieces in product(*runs):
            src = tuple(slice(s, e) for s, e, _ in pieces)
            dst = tuple(slice(d, d + e - s) for s, e, d in pieces)
            out[dst] = np.asarray(self.source[src])
        return zscore(out, self.mean, self.std)


def axis_runs(lo: int, hi: int, n: int) -> list[tuple[int, int, int]]:
    """Contiguous ``(source start, source stop, destination start)`` runs covering ``lo:hi`` wrapped on ``n``."""
    runs = []
    pos = lo
    while pos < hi:
        start = pos % n
        length = min(hi - pos, n - start)
        runs.append((start, start + length, pos - lo))
        pos += length
    return runs


def block_bounds(chunks: tuple[tuple[int, ...], ...], block_id: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` along each axis of block ``block_id`` of an array chunked as ``chunks``."""
    out = []
    for c, i in zip(chunks, block_id):
        start = int(sum(c[:i]))
        out.append((start, start + int(c[i])))
    return tuple(out)
