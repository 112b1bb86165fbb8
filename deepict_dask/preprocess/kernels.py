"""Numerical kernels shared by the spectrum and the equalization filter.

Everything here works on in-memory arrays (one dask task's worth of data). The 3D FFT runs on
``scipy.fft`` (multi-threaded) or, when a CUDA device is present, on ``torch.fft``; the same code
path also runs on torch's CPU backend, which is how it is tested on machines without a GPU.

Radial frequency grid (see :class:`RadialGrid`): frequencies are physical (1/A) so that volumes
with different shapes or anisotropic voxels share one axis. Shells are ``dk = 1 / max_i(n_i * v_i)``
wide (the finest frequency step of any axis) and run from 0 up to the Nyquist frequency of the
coarsest axis, ``1 / (2 * max_i v_i)``: the largest radius sampled in every direction. Frequencies
beyond it (the corners of the FFT box, and the high end of finer axes) are not part of the spectrum,
and the equalization filter is zero there.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

# Planes of the half spectrum handled at once when binning or scaling, to bound temporaries.
_SLAB_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class RadialGrid:
    """Radial shells of the real-FFT grid of a ``shape`` volume with ``voxel_size`` (z, y, x) in A."""

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]

    @property
    def dk(self) -> float:
        return 1.0 / max(n * v for n, v in zip(self.shape, self.voxel_size))

    @property
    def nyquist(self) -> float:
        return 1.0 / (2.0 * max(self.voxel_size))

    @property
    def nbins(self) -> int:
        return int(np.floor(self.nyquist / self.dk + 1e-6)) + 1

    @property
    def freqs(self) -> np.ndarray:
        """Centre frequency (1/A) of every shell."""
        return np.arange(self.nbins) * self.dk

    def axes_in_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Squared frequency along z, y, and x (rfft half axis), in units of ``dk`` squared."""
        nz, ny, nx = self.shape
        vz, vy, vx = self.voxel_size
        fz = np.fft.fftfreq(nz, vz) / self.dk
        fy = np.fft.fftfreq(ny, vy) / self.dk
        fx = np.fft.rfftfreq(nx, vx) / self.dk
        return (fz**2).astype(np.float32), (fy**2).astype(np.float32), (fx**2).astype(np.float32)

    def x_weights(self) -> np.ndarray:
        """Multiplicity of every rfft column: 2 for columns that stand for a conjugate pair too."""
        nx = self.shape[2]
        w = np.full(nx // 2 + 1, 2.0, dtype=np.float32)
        w[0] = 1.0
        if nx % 2 == 0:
            w[-1] = 1.0
        return w


class NumpyBackend:
    """scipy.fft on the CPU with ``workers`` threads."""

    name = "scipy"

    def __init__(self, workers: int | None = None):
        self.workers = workers or cpu_count()

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def rfftn(self, x: np.ndarray) -> np.ndarray:
        import scipy.fft

        return scipy.fft.rfftn(x, norm="ortho", workers=self.workers, overwrite_x=True)

    def irfftn(self, f: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        import scipy.fft

        return scipy.fft.irfftn(f, s=shape, norm="ortho", workers=self.workers, overwrite_x=True)

    def power(self, f: np.ndarray) -> np.ndarray:
        a = np.abs(f)
        a *= a
        return a

    def bincount(self, idx: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(idx.ravel(), weights=weights.ravel(), minlength=n)[:n]

    def round_index(self, pos: np.ndarray) -> np.ndarray:
        return np.rint(pos).astype(np.intp)

    def floor_clip(self, pos: np.ndarray, hi: int) -> np.ndarray:
        return np.clip(np.floor(pos), 0, hi)

    def to_index(self, a: np.ndarray) -> np.ndarray:
        return a.astype(np.intp)

    def sqrt(self, a: np.ndarray) -> np.ndarray:
        return np.sqrt(a)

    def broadcast(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(a, shape)


class TorchBackend:
    """torch.fft on ``device`` ("cuda" normally; "cpu" works too and is what the tests use)."""

    name = "torch"

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def asarray(self, a: np.ndarray) -> Any:
        return self.torch.as_tensor(np.ascontiguousarray(a), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()

    def rfftn(self, x: Any) -> Any:
        return self.torch.fft.rfftn(x, norm="ortho")

    def irfftn(self, f: Any, shape: tuple[int, ...]) -> Any:
        return self.torch.fft.irfftn(f, s=shape, norm="ortho")

    def power(self, f: Any) -> Any:
        return f.abs().square_()

    def bincount(self, idx: Any, weights: Any, n: int) -> np.ndarray:
        counts = self.torch.bincount(idx.flatten(), weights=weights.flatten().double(), minlength=n)
        return counts[:n].cpu().numpy()

    def round_index(self, pos: Any) -> Any:
        return self.torch.round(pos).long()

    def floor_clip(self, pos: Any, hi: int) -> Any:
        return self.torch.clamp(self.torch.floor(pos), 0, hi)

    def to_index(self, a: Any) -> Any:
        return a.long()

    def sqrt(self, a: Any) -> Any:
        return self.torch.sqrt(a)

    def broadcast(self, a: Any, shape: tuple[int, ...]) -> Any:
        return a.expand(shape)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; without an NVIDIA driver, answered without importing torch."""
    if "torch" not in sys.modules and not (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidia0")):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def get_backend(name: str = "auto", workers: int | None = None) -> NumpyBackend | TorchBackend:
    """``auto``: torch on CUDA when a GPU is visible, else scipy; ``scipy``; ``torch`` / ``torch-cpu``."""
    if name == "auto":
        name = "torch" if cuda_available() else "scipy"
    if name == "scipy":
        return NumpyBackend(workers)
    if name == "torch":
        return TorchBackend("cuda" if cuda_available() else "cpu")
    if name == "torch-cpu":
        return TorchBackend("cpu")
    raise ValueError(f"unknown FFT backend {name!r}; use auto, scipy, torch or torch-cpu")


def _slabs(shape: tuple[int, ...]):
    """Ranges of leading-axis planes holding about ``_SLAB_ELEMENTS`` values each."""
    plane = int(np.prod(shape[1:]))
    step = max(1, _SLAB_ELEMENTS // max(plane, 1))
    for z0 in range(0, shape[0], step):
        yield z0, min(shape[0], z0 + step)


def _radius(be: Any, fz2: Any, fyx2: Any, z0: int, z1: int) -> Any:
    """Radial frequency (in shells) of planes ``z0:z1`` of the half spectrum."""
    return be.sqrt(fz2[z0:z1, None, None] + fyx2[None])


def _device_axes(be: Any, grid: RadialGrid) -> tuple[Any, Any, Any]:
    fz2, fy2, fx2 = grid.axes_in_bins()
    fyx2 = fy2[:, None] + fx2[None, :]
    return be.asarray(fz2), be.asarray(fyx2), be.asarray(grid.x_weights())


def shell_power(be: Any, f: Any, grid: RadialGrid) -> tuple[np.ndarray, np.ndarray]:
    """Sum of |F|^2 and number of Fourier samples per radial shell, over the full (Hermitian) sphere."""
    fz2, fyx2, wx = _device_axes(be, grid)
    n = grid.nbins
    psum = np.zeros(n)
    count = np.zeros(n)
    for z0, z1 in _slabs(tuple(f.shape)):
        idx = be.round_index(_radius(be, fz2, fyx2, z0, z1))
        p = be.power(f[z0:z1])
        p *= wx
        psum += be.bincount(idx, p, n)
        count += be.bincount(idx, be.broadcast(wx, tuple(idx.shape)), n)
    return psum, count


def scale_by_gain(
    be: Any, f: Any, grid: RadialGrid, gain: np.ndarray, gain_dk: float, *, per_shell: bool = False
) -> None:
    """Multiply the half spectrum ``f`` in place by the radial ``gain`` (sampled every ``gain_dk`` 1/A).

    The gain is interpolated linearly between its samples and falls to zero one sample past its end.
    ``per_shell``: instead give every Fourier sample the gain of its own shell (``gain`` must then be
    sampled on ``grid``'s shells), so that each shell's amplitude is scaled by exactly its gain.
    """
    fz2, fyx2, _ = _device_axes(be, grid)
    table = np.concatenate([np.asarray(gain, dtype=np.float32), np.zeros(2, np.float32)])
    last = len(table) - 2
    table_d = be.asarray(table)
    scale = np.float32(grid.dk / gain_dk)
    for z0, z1 in _slabs(tuple(f.shape)):
        pos = _radius(be, fz2, fyx2, z0, z1)
        pos *= scale
        if per_shell:
            f[z0:z1] *= table_d[be.to_index(be.floor_clip(pos + 0.5, last))]
            continue
        fl = be.floor_clip(pos, last)
        i0 = be.to_index(fl)
        frac = pos - fl
        g = table_d[i0]
        g += (table_d[i0 + 1] - g) * frac
        f[z0:z1] *= g


def power_spectrum(be: Any, x: np.ndarray, voxel_size: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Shell power sums and counts of one whole volume (no window): the exact spectrum."""
    grid = RadialGrid(tuple(x.shape), voxel_size)
    f = be.rfftn(be.asarray(np.asarray(x, dtype=np.float32)))
    return shell_power(be, f, grid)


@functools.lru_cache(maxsize=8)
def _hann3d(shape: tuple[int, int, int]) -> np.ndarray:
    from scipy.signal.windows import hann

    wz, wy, wx = (hann(n, sym=False).astype(np.float32) if n > 2 else np.ones(n, np.float32) for n in shape)
    return wz[:, None, None] * wy[None, :, None] * wx[None, None, :]


def window_starts(core: int, length: int, w: int) -> list[int]:
    """Starts of the Welch windows owned by a block: every ``w // 2`` voxels inside its core.

    ``length`` is the block's length including the look-ahead into the next block; a window is
    kept only if it fits. With block cores aligned to multiples of ``w // 2`` this tiles the whole
    volume on one global lattice, each window counted once, whatever the chunking.
    """
    step = max(w // 2, 1)
    return [p for p in range(0, core, step) if p + w <= length]


def welch_power(
    block: np.ndarray,
    core: tuple[int, int, int],
    window: tuple[int, int, int],
    voxel_size: tuple[float, float, float],
) -> np.ndarray:
    """Welch sums over the windows a block owns: ``[power sums..., counts..., n_windows]``.

    Each window is mean-subtracted, multiplied by a separable Hann taper and Fourier transformed;
    its power is divided by the taper's mean square so that every window is an unbiased estimate of
    the power spectrum on the same scale as the exact one.
    """
    be = NumpyBackend(workers=1)
    grid = RadialGrid(window, voxel_size)
    taper = _hann3d(window)
    norm = float(np.mean(taper.astype(np.float64) ** 2))
    n = grid.nbins
    psum = np.zeros(n)
    count = np.zeros(n)
    nwin = 0
    wz, wy, wx = window
    for z in window_starts(core[0], block.shape[0], wz):
        for y in window_starts(core[1], block.shape[1], wy):
            for x in window_starts(core[2], block.shape[2], wx):
                seg = np.asarray(block[z : z + wz, y : y + wy, x : x + wx], dtype=np.float32)
                seg = (seg - seg.mean(dtype=np.float64)).astype(np.float32) * taper
                p, c = shell_power(be, be.rfftn(seg), grid)
                psum += p / norm
                count += c
                nwin += 1
    return np.concatenate([psum, count, [nwin]])


def even_chunks(n: int, block: int, minimum: int) -> tuple[int, ...]:
    """Chunk sizes of about ``block`` along an axis of length ``n``, none smaller than ``minimum``."""
    block = max(block, minimum, 1)
    if n <= block:
        return (n,)
    sizes = [block] * (n // block)
    rest = n - sum(sizes)
    if rest:
        if rest < minimum:
            sizes[-1] += rest
        else:
            sizes.append(rest)
    return tuple(sizes)


def convolve_valid(block: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Overlap-save step: the part of ``block`` that ``kernel`` covers completely, convolved.

    ``block`` carries a halo of ``kernel.shape[i] // 2`` voxels on each side; the result is the block
    without its halo. Done by FFT: a circular convolution of the block's size is exact away from
    the first ``kernel - 1`` samples, which are exactly the halo that is dropped.
    """
    import scipy.fft

    k = kernel.shape
    out_shape = tuple(b - (kk - 1) for b, kk in zip(block.shape, k))
    fshape = tuple(scipy.fft.next_fast_len(b, real=True) for b in block.shape)
    kf = _kernel_fft(kernel.tobytes(), kernel.shape, fshape)
    bf = scipy.fft.rfftn(np.asarray(block, dtype=np.float32), s=fshape, workers=1)
    bf *= kf
    full = scipy.fft.irfftn(bf, s=fshape, workers=1, overwrite_x=True)
    sl = tuple(slice(kk - 1, kk - 1 + o) for kk, o in zip(k, out_shape))
    return np.ascontiguousarray(full[sl], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _kernel_fft(kernel_bytes: bytes, kshape: tuple[int, ...], fshape: tuple[int, ...]) -> np.ndarray:
    """FFT of the kernel at one padded block shape, cached per worker process (blocks share shapes)."""
    import scipy.fft

    kernel = np.frombuffer(kernel_bytes, dtype=np.float32).reshape(kshape)
    return scipy.fft.rfftn(kernel, s=fshape, workers=1).astype(np.complex64)
