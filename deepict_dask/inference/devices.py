"""Device choice, torch threads, mixed precision and out-of-memory recovery for inference."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from deepict_dask.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")
CPU_BATCH = 2  # default windows per forward pass on CPU (see auto_batch_size)
GPU_BATCH_VOXELS = 2**23  # voxels per forward pass on a GPU: 4 windows of 128^3 (see auto_batch_size)


def choose_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit choices are checked."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested}: no CUDA GPU is visible to torch")
        return requested
    if requested == "cpu":
        return "cpu"
    raise ConfigError(f"device must be auto, cpu or cuda[:N], got {requested!r}")


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def process_gpu(device: str) -> str:
    """The GPU this process uses for ``device``: on a node with several GPUs, plain ``cuda`` becomes
    ``cuda:K`` for the process's slot K modulo the GPU count, so the worker processes of a node
    spread over its GPUs instead of all landing on the first (``cuda:N`` and CPU are kept as given;
    a worker pinned with ``CUDA_VISIBLE_DEVICES`` sees one GPU and keeps ``cuda``)."""
    if device != "cuda":
        return device
    n = torch.cuda.device_count()
    return device if n <= 1 else f"cuda:{process_slot() % n}"


def process_slot() -> int:
    """This worker's index among the processes of its node, read from the trailing number of its
    name (LocalCluster: ``3``; ``dask worker --nworkers``: ``NAME-3``; dask-jobqueue:
    ``SLURMCluster-JOB-3``); the process id outside a worker or for other names."""
    try:
        from distributed import get_worker

        match = re.search(r"(\d+)$", str(get_worker().name))
    except (ImportError, ValueError):
        match = None
    return int(match.group(1)) if match else os.getpid()


def worker_threads(default: int | None = None) -> int:
    """Threads this process may use: the Dask worker's thread budget, else ``default`` or torch's."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return max(1, default or torch.get_num_threads())


def set_torch_threads(n: int) -> None:
    """Give torch ``n`` intra-op threads (inter-op parallelism is not used by inference)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def autocast(device: str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Mixed precision context: fp16 on CUDA by default, bf16 on CPU only when asked for.

    ``precision``: ``auto`` (CUDA fp16, CPU fp32), ``fp32``, ``fp16`` or ``bf16``.
    """
    if precision == "auto":
        precision = "fp16" if is_cuda(device) else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        raise ConfigError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    return torch.autocast("cuda" if is_cuda(device) else "cpu", dtype=dtype)


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or CPU allocator) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_cache() -> None:
    """Give cached GPU memory back after an out-of-memory error, so that a retry can get it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class BatchRunner:
    """Run items through ``fn`` in batches, halving the batch size on out-of-memory errors.

    The size that worked is remembered, so later calls start from it instead of failing again.
    """

    def __init__(self, batch_size: int, *, on_oom: Callable[[], None] = free_device_cache):
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._on_oom = on_oom

    def run(self, fn: Callable[[Sequence[Any]], list[T]], items: Sequence[Any]) -> list[T]:
        out: list[T] = []
        i = 0
        while i < len(items):
            batch = items[i : i + self.batch_size]
            try:
                out.extend(fn(batch))
            except Exception as exc:
                if not is_oom(exc) or self.batch_size == 1:
                    raise
                self._on_oom()
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory: batch size halved to %d", self.batch_size)
                continue
            i += len(batch)
        return out


def auto_batch_size(device: str, voxels_per_window: int, channels: int = 16, requested: int | None = None) -> int:
    """A starting batch size: the request, else a few windows that fit in the free GPU memory.

    On CUDA, batches hold about :data:`GPU_BATCH_VOXELS` voxels: on an H100 the DeePiCt ribosome
    net ran 4 windows of 128^3 at 97 % of the speed of 32, with a sixth of the memory (1.5 vs 8.4
    GB), and several worker processes usually share one GPU. The memory estimate (activations of
    the widest level, a few copies, fp16) is rough on purpose; the :class:`BatchRunner` halves the
    batch if it turns out too large. On CPU the default is :data:`CPU_BATCH`: with one window per
    pass torch sends the convolutions with few input channels to its slow reference kernel instead
    of oneDNN (measured 1.7x slower per voxel in ``benchmarks/bench_predict.py``); larger batches
    add little and cost memory.
    """
    if requested:
        return requested
    if not is_cuda(device):
        return CPU_BATCH
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    per_window = voxels_per_window * channels * 2 * 8
    fits = (free // 2) // max(per_window, 1)
    few = GPU_BATCH_VOXELS // max(voxels_per_window, 1)
    return int(max(1, min(fits, few)))


@contextlib.contextmanager
def inference_mode() -> Iterator[None]:
    with torch.inference_mode():
        yield
