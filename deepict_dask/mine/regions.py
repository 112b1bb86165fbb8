"""Read one region of a tomogram inside a task, straight from its file when possible.

Tasks of the mining stages (DoG blocks with halos, patch chunks) each read only what they need:
from the stored array (MRC memmap, Zarr) when the volume is exactly that array, else by computing
the slice of the lazy volume synchronously inside the task (no nested scheduling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from deepict_dask.io.volume import stored_source


@dataclass(frozen=True)
class RegionReader:
    """Small, picklable handle on a 3D volume; ``reader(slices)`` returns that region as float32."""

    source: Any
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, data: da.Array | np.ndarray) -> RegionReader:
        src = stored_source(data) if isinstance(data, da.Array) else data
        return cls(data if src is None else src, tuple(int(n) for n in data.shape))  # type: ignore[arg-type]

    def __call__(self, slices: tuple[slice, ...]) -> np.ndarray:
        region = self.source[slices]
        if isinstance(region, da.Array):
            region = region.compute(scheduler="sync")
        return np.asarray(region, dtype=np.float32)
