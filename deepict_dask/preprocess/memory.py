"""How much memory one worker has, to choose between whole-volume and blockwise algorithms."""

from __future__ import annotations

import numpy as np

# Bytes of working memory per voxel for a whole-volume FFT filter task: the float32 input assembled
# from its chunks (4), the complex64 half spectrum (4), per-slab temporaries, the float32 result (4)
# and its copy being handed to the writer (4), plus slack for scipy's internal buffers.
EXACT_BYTES_PER_VOXEL = 24
# Fraction of a worker's memory limit an exact task may plan to use (distributed pauses a worker
# at 80 % and restarts it at 95 %).
USABLE_FRACTION = 0.6


def worker_memory_limit() -> int:
    """Smallest memory limit among the workers of the active distributed client, else available RAM."""
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is not None:
        try:
            workers = client.scheduler_info(n_workers=-1).get("workers", {})
        except TypeError:  # older distributed without n_workers
            workers = client.scheduler_info().get("workers", {})
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        limits = [m for m in limits if m > 0]
        if limits:
            return min(limits)
    import psutil

    return int(psutil.virtual_memory().available)


def exact_bytes(shape: tuple[int, ...]) -> int:
    """Planned peak memory of a whole-volume FFT filter on a volume of ``shape``."""
    return int(np.prod(shape, dtype=np.int64)) * EXACT_BYTES_PER_VOXEL


def fits_in_worker(shape: tuple[int, ...], memory_limit: int | None = None) -> bool:
    """Whether a whole-volume FFT of ``shape`` fits in one worker (``memory_limit`` bytes, or detected)."""
    limit = worker_memory_limit() if memory_limit is None else memory_limit
    return exact_bytes(shape) <= USABLE_FRACTION * limit
