"""Amplitude-spectrum equalization: make a tomogram's radial spectrum match a target spectrum.

The filter is rotationally symmetric in physical frequency ``k`` (1/A)::

    gain(k) = target(k) / input(k) * lowpass(k / nyquist)
    lowpass(f) = 1 / (1 + exp((f - cutoff) / width))        (f in fractions of the input's Nyquist)

with ``input`` the radial amplitude spectrum of the *normalized* tomogram and ``target`` that of a
normalized reference (what ``deepict spectrum`` writes), so after filtering the tomogram has the
reference's amplitude spectrum across the pass band. Details:

* The target is resampled (linearly, in 1/A) onto the input's frequency shells, so references with
  another voxel size or box size work. Above the target's highest frequency (its Nyquist, when the
  reference had coarser voxels) the target counts as zero. If the target does not reach the
  low-pass cutoff frequency, or has fewer than 4 samples below it, resampling cannot cover the
  mismatch and :class:`InputError` names the target file.
* Below the target's lowest frequency the target is held constant; the DC gain equals the gain of
  the first shell (the normalized volume has zero mean anyway).
* Shells where the input has no power get zero gain; the filter is zero beyond the Nyquist frequency
  of the coarsest axis (the corners of the FFT box), i.e. it is a spherical band limit.
* Anisotropic voxels: frequencies are physical, so the filter is spherical in 1/A (an ellipsoid in
  voxel units); "Nyquist" is that of the coarsest axis (see :mod:`.kernels`).

Application modes:

* ``exact``: one FFT of the whole tomogram in a single dask task (scipy.fft with all cores, or
  torch.fft when CUDA is available); the input spectrum is measured from the same FFT and every
  Fourier sample gets the gain of its own shell, so each shell of the output has exactly the target
  amplitude (times the low-pass). With a given ``input_spectrum`` the gain is interpolated linearly
  in ``k`` instead, like in blockwise mode. Boundary is periodic (as in any whole-volume FFT filter).
* ``blockwise``: overlap-save convolution with the filter's spatial kernel truncated to a cube of
  half-width ``halo``; the input spectrum is estimated first with Welch (:func:`radial_spectrum`;
  a whole-volume FFT only when ``spectrum_method='exact'`` is asked for). When the tomogram is stored
  in a file (MRC, Zarr) every block task reads its region and halo from the file itself
  (:mod:`.stored`), so a worker's memory depends on the block size and halo only, never on the
  volume; otherwise ``dask.array.map_overlap`` assembles blocks from chunks. ``halo`` defaults
  to the smallest half-width whose cube holds ``halo_energy`` (99.999 %) of the kernel's energy;
  the relative RMS difference to ``exact`` is then about ``sqrt(1 - halo_energy)``. Periodic
  boundary too, so it agrees with ``exact`` everywhere, not only away from the border; memory per
  task depends on the block size and halo only. Shell-to-shell noise in an exact spectrum of a small
  volume (relative energy about ``1 / (2 L^2)`` for an ``L^3`` volume) gives the kernel a faint tail as
  large as the volume; Welch spectra (the ``auto`` choice for large volumes) are smooth and give
  compact kernels (the reason blockwise mode always measures with Welch unless told otherwise).
  The halo never exceeds half the smallest axis.
* ``auto``: ``exact`` when the whole-volume FFT fits in the smallest worker's memory limit (or the
  available RAM without a distributed client), else ``blockwise``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume, origin_of, voxel_size_of
from deepict_dask.preprocess.kernels import (
    RadialGrid,
    convolve_valid,
    even_chunks,
    get_backend,
    scale_by_gain,
    shell_power,
)
from deepict_dask.preprocess.memory import fits_in_worker
from deepict_dask.preprocess.normalize import check_tomogram, normalize, source_of
from deepict_dask.preprocess.options import (
    BLOCK_SIZE,
    HALO_ENERGY,
    LOWPASS_CUTOFF,
    LOWPASS_WIDTH,
    MAX_HALO,
    FilterOptions,
)
from deepict_dask.preprocess.spectrum import default_target, radial_spectrum, read_spectrum, validate_spectrum
from deepict_dask.preprocess.stored import StoredInput, block_bounds

log = logging.getLogger(__name__)

MODES = ("auto", "exact", "blockwise")


def lowpass(freq_nyquist: np.ndarray, cutoff: float | None, width: float) -> np.ndarray:
    """Sigmoid low-pass: 1/2 at ``cutoff`` (fraction of Nyquist), ``width`` its 1/e scale; a step if width is 0."""
    f = np.asarray(freq_nyquist, dtype=np.float64)
    if cutoff is None:
        return np.ones_like(f)
    if width <= 0:
        return (f <= cutoff).astype(np.float64)
    from scipy.special import expit

    return expit(-(f - cutoff) / width)


def _target_source(target: pd.DataFrame) -> str | None:
    return target.attrs.get("source")


def check_target_coverage(
    target: pd.DataFrame, nyquist: float, lowpass_cutoff: float | None, *, volume_source: str | None = None
) -> None:
    """Raise :class:`InputError` when the target cannot describe the input's pass band."""
    freqs = target["freq_inv_A"].to_numpy()
    band = nyquist * (1.0 if lowpass_cutoff is None else min(lowpass_cutoff, 1.0))
    where = _target_source(target) or "target spectrum"
    if freqs[-1] < band * (1 - 1e-6):
        raise InputError(
            f"target spectrum reaches only {freqs[-1]:.4g} 1/A (Nyquist of {1 / (2 * freqs[-1]):.3g} A voxels) "
            f"but the pass band of {volume_source or 'the tomogram'} reaches {band:.4g} 1/A: the voxel sizes "
            f"differ too much to resample. Make the target from a tomogram with voxels of at most "
            f"{1 / (2 * band):.3g} A, or lower lowpass_cutoff to {freqs[-1] / nyquist:.3g} or less",
            where,
        )
    if np.count_nonzero(freqs <= band) < 4:
        raise InputError(
            f"target spectrum has only {np.count_nonzero(freqs <= band)} samples below {band:.4g} 1/A, too coarse "
            f"for {volume_source or 'the tomogram'} (voxels of {1 / (2 * nyquist):.3g} A); make the target from a "
            "tomogram with a larger field of view or a voxel size closer to this one",
            where,
        )


def gain_profile(
    freqs: np.ndarray,
    input_amplitude: np.ndarray,
    target: pd.DataFrame,
    nyquist: float,
    lowpass_cutoff: float | None = LOWPASS_CUTOFF,
    lowpass_width: float = LOWPASS_WIDTH,
) -> np.ndarray:
    """Gain ``target / input * lowpass`` at ``freqs`` (1/A) given the input amplitude there."""
    amp = np.asarray(input_amplitude, dtype=np.float64)
    tf = target["freq_inv_A"].to_numpy()
    ta = target["amplitude"].to_numpy()
    if tf[0] == 0:  # the DC term of a normalized reference is ~0: hold the first shell's value instead
        tf, ta = tf[1:], ta[1:]
    t = np.interp(freqs, tf, ta, left=ta[0], right=0.0)
    floor = 1e-6 * (amp[1:].max() if amp.size > 1 else amp.max())
    safe = np.where(amp > floor, amp, 1.0)
    gain = np.where(amp > floor, t / safe, 0.0)
    if gain.size > 1 and freqs[0] == 0:
        gain[0] = gain[1]
    return gain * lowpass(np.asarray(freqs) / nyquist, lowpass_cutoff, lowpass_width)


@dataclass
class EqualizationFilter:
    """A rotationally symmetric filter: ``gain`` sampled at ``k = i * dk`` (1/A), zero past the end."""

    gain: np.ndarray
    dk: float
    voxel_size: tuple[float, float, float]
    lowpass_cutoff: float | None = LOWPASS_CUTOFF
    lowpass_width: float = LOWPASS_WIDTH
    _kernels: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def freqs(self) -> np.ndarray:
        return np.arange(len(self.gain)) * self.dk

    @property
    def nyquist(self) -> float:
        return 1.0 / (2.0 * max(self.voxel_size))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"freq_inv_A": self.freqs, "freq_nyquist": self.freqs / self.nyquist, "gain": self.gain})

    def kernel(self, size: int) -> np.ndarray:
        """Spatial kernel (float32) on a ``size``^3 grid, centred at index ``size // 2``.

        Sampled as the inverse FFT of the gain on that grid, so it is the periodic sum of the true
        kernel; ``size`` must be well above the kernel's extent. Cached per size.
        """
        if size not in self._kernels:
            import scipy.fft

            shape = (size, size, size)
            spec = np.ones((size, size, size // 2 + 1), dtype=np.complex64)
            scale_by_gain(get_backend("scipy"), spec, RadialGrid(shape, self.voxel_size), self.gain, self.dk)
            h = scipy.fft.irfftn(spec.real, s=shape, workers=-1)
            self._kernels[size] = np.fft.fftshift(h).astype(np.float32)
        return self._kernels[size]

    @staticmethod
    def kernel_grid(max_halo: int) -> int:
        """Grid on which kernels are sampled: a fast FFT size of at least 4x the largest halo."""
        import scipy.fft

        return scipy.fft.next_fast_len(max(4 * max_halo, 32), real=True)

    def choose_halo(self, energy: float = HALO_ENERGY, max_halo: int = MAX_HALO) -> tuple[int, float]:
        """Smallest cube half-width holding ``energy`` of the kernel's energy (capped at ``max_halo``).

        Returns ``(halo, fraction of energy inside)``.
        """
        if not 0 < energy <= 1:
            raise ValueError(f"halo energy must be in (0, 1], got {energy}")
        size = self.kernel_grid(max_halo)
        h = self.kernel(size).astype(np.float64)
        r = np.abs(np.arange(size) - size // 2)
        cheb = np.maximum(np.maximum(r[:, None, None], r[None, :, None]), r[None, None, :])
        e = np.cumsum(np.bincount(cheb.ravel(), weights=(h * h).ravel()))
        frac = e / e[-1] if e[-1] > 0 else np.ones_like(e)
        ok = np.nonzero(frac >= energy)[0]
        if ok.size and ok[0] <= max_halo:
            halo = int(ok[0])
        else:
            halo = max_halo
            log.warning(
                "filter kernel holds only %.5f%% of its energy within the maximum halo of %d voxels; "
                "blockwise results will differ from exact ones by about %.2g (relative RMS)",
                100 * frac[max_halo], max_halo, np.sqrt(max(1 - frac[max_halo], 0)),
            )
        return halo, float(frac[halo])

    def truncated_kernel(self, halo: int, max_halo: int = MAX_HALO) -> np.ndarray:
        """The kernel cut to a ``(2 * halo + 1)``^3 cube, for blockwise application."""
        size = self.kernel_grid(max(halo, max_halo))
        c = size // 2
        h = self.kernel(size)[c - halo : c + halo + 1, c - halo : c + halo + 1, c - halo : c + halo + 1]
        return np.ascontiguousarray(h, dtype=np.float32)


def equalization_filter(
    input_spectrum: pd.DataFrame,
    target: pd.DataFrame,
    *,
    voxel_size: float | tuple[float, float, float],
    lowpass_cutoff: float | None = LOWPASS_CUTOFF,
    lowpass_width: float = LOWPASS_WIDTH,
    volume_source: str | None = None,
) -> EqualizationFilter:
    """Build the filter that turns a volume with ``input_spectrum`` into one with ``target``'s spectrum.

    ``voxel_size`` is the input tomogram's (z, y, x) voxel size in A (its coarsest axis sets Nyquist).
    The gain is tabulated on a uniform grid as fine as the input spectrum's shells.

    Parameters
    ----------
    input_spectrum : DataFrame
        The input volume's radial amplitude spectrum (:func:`~.spectrum.radial_spectrum`).
    target : DataFrame
        The target spectrum (as :func:`~.spectrum.read_spectrum` returns it).
    voxel_size : float or (float, float, float)
        The input's voxel size, Angstrom.
    lowpass_cutoff : float, optional
        Low-pass cutoff as a fraction of Nyquist; None: no low-pass.
    lowpass_width : float
        The low-pass's 1/e width (fraction of Nyquist); 0 makes it a step.
    volume_source : str, optional
        The input's file, named in error messages.

    Returns
    -------
    EqualizationFilter
        The rotationally symmetric gain, ready for :func:`apply_filter`.
    """
    from deepict_dask.io.volume import as_voxel_size

    vs = as_voxel_size(voxel_size)
    nyquist = 1.0 / (2.0 * max(vs))
    target = _as_target(target)
    check_target_coverage(target, nyquist, lowpass_cutoff, volume_source=volume_source)
    spec = validate_spectrum(input_spectrum)
    f_in = spec["freq_inv_A"].to_numpy()
    a_in = spec["amplitude"].to_numpy()
    dk = float(np.min(np.diff(f_in)))
    freqs = np.arange(int(np.floor(min(f_in[-1], nyquist) / dk + 1e-6)) + 1) * dk
    amp = np.interp(freqs, f_in, a_in)
    gain = gain_profile(freqs, amp, target, nyquist, lowpass_cutoff, lowpass_width)
    return EqualizationFilter(gain, dk, vs, lowpass_cutoff, lowpass_width)


def _as_target(target: Any) -> pd.DataFrame:
    if target is None:
        return default_target()
    if isinstance(target, pd.DataFrame):
        return validate_spectrum(target)
    if isinstance(target, str | os.PathLike):
        return read_spectrum(target)
    raise TypeError(f"target must be a spectrum DataFrame, a TSV path or None, not {type(target).__name__}")


def exact_equalize(
    x: np.ndarray,
    voxel_size: tuple[float, float, float],
    target: pd.DataFrame,
    lowpass_cutoff: float | None = LOWPASS_CUTOFF,
    lowpass_width: float = LOWPASS_WIDTH,
    input_spectrum: pd.DataFrame | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Whole-volume equalization of an in-memory (normalized) array: one forward and one inverse FFT.

    Falls back from torch/CUDA to scipy when the GPU runs out of memory.
    """
    be = get_backend(backend)
    try:
        return _exact_equalize(be, x, voxel_size, target, lowpass_cutoff, lowpass_width, input_spectrum)
    except RuntimeError as exc:
        if be.name != "torch" or "out of memory" not in str(exc).lower():
            raise
        log.warning("GPU out of memory for a %s volume; filtering on the CPU instead", x.shape)
        return _exact_equalize(get_backend("scipy"), x, voxel_size, target, lowpass_cutoff, lowpass_width, input_spectrum)


def _exact_equalize(
    be: Any,
    x: np.ndarray,
    voxel_size: tuple[float, float, float],
    target: pd.DataFrame,
    lowpass_cutoff: float | None,
    lowpass_width: float,
    input_spectrum: pd.DataFrame | None,
) -> np.ndarray:
    shape = tuple(x.shape)
    grid = RadialGrid(shape, voxel_size)
    f = be.rfftn(be.asarray(np.asarray(x, dtype=np.float32)))
    if input_spectrum is None:
        psum, count = shell_power(be, f, grid)
        amp = np.sqrt(psum / np.maximum(count, 1))
        gain = gain_profile(grid.freqs, amp, target, grid.nyquist, lowpass_cutoff, lowpass_width)
        dk = grid.dk
    else:
        filt = equalization_filter(
            input_spectrum, target, voxel_size=voxel_size, lowpass_cutoff=lowpass_cutoff, lowpass_width=lowpass_width
        )
        gain, dk = filt.gain, filt.dk
    scale_by_gain(be, f, grid, gain, dk, per_shell=input_spectrum is None)
    out = be.irfftn(f, shape)
    del f
    return np.asarray(be.to_numpy(out), dtype=np.float32)


def blockwise_convolve(data: da.Array, kernel: np.ndarray, block_size: int = BLOCK_SIZE) -> da.Array:
    """Periodic-boundary convolution of ``data`` with a small odd cubic ``kernel``, chunk by chunk."""
    halo = kernel.shape[0] // 2
    if halo > min(data.shape):
        raise ValueError(f"halo {halo} is larger than the volume {data.shape}; use exact mode")
    chunks = tuple(even_chunks(n, block_size, halo) for n in data.shape)
    data = data.rechunk(chunks)
    if halo == 0:
        return (data * np.float32(kernel.ravel()[0])).astype(np.float32)
    kernel_d = dask.delayed(kernel, pure=True)
    return da.map_overlap(
        _convolve_block,
        data,
        depth=halo,
        boundary="periodic",
        trim=False,
        allow_rechunk=False,
        chunks=chunks,
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        kernel=kernel_d,
    )


def _convolve_block(block: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return convolve_valid(block, kernel)


def stored_convolve(stored: StoredInput, kernel: np.ndarray, block_size: int = BLOCK_SIZE) -> da.Array:
    """:func:`blockwise_convolve` of a stored volume, each task reading its block and halo from the file."""
    halo = kernel.shape[0] // 2
    if halo > min(stored.shape):
        raise ValueError(f"halo {halo} is larger than the volume {stored.shape}; use exact mode")
    chunks = tuple(even_chunks(n, block_size, halo) for n in stored.shape)
    return da.map_blocks(
        _convolve_stored_block,
        _ConvolvePlan(stored, chunks, halo),
        chunks=chunks,
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        kernel=dask.delayed(kernel, pure=True),
    )


@dataclass(frozen=True)
class _ConvolvePlan:
    """What a convolution task on a stored volume needs; it finds its block from its block index."""

    stored: StoredInput
    chunks: tuple[tuple[int, ...], ...]
    halo: int


def _convolve_stored_block(plan: _ConvolvePlan, kernel: np.ndarray, block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """Read the block plus a periodic halo from the file, then convolve (overlap-save)."""
    bounds = block_bounds(plan.chunks, block_id)
    region = plan.stored.read(tuple(a - plan.halo for a, _ in bounds), tuple(b + plan.halo for _, b in bounds))
    if plan.halo == 0:
        return region * np.float32(kernel.ravel()[0])
    return convolve_valid(region, kernel)


def choose_mode(shape: tuple[int, ...], mode: str = "auto", memory_limit: int | None = None) -> str:
    """``exact`` or ``blockwise`` for ``mode='auto'`` from the volume size and the worker memory limit."""
    if mode not in MODES:
        raise ValueError(f"unknown filter mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "exact" if fits_in_worker(shape, memory_limit) else "blockwise"


def apply_filter(
    volume: xr.DataArray,
    options: FilterOptions | None = None,
    *,
    target: pd.DataFrame | str | os.PathLike | None = None,
    input_spectrum: pd.DataFrame | None = None,
    backend: str = "auto",
    memory_limit: int | None = None,
    **settings: Any,
) -> xr.DataArray:
    """Normalize ``volume`` and equalize its amplitude spectrum; returns a lazy float32 volume.

    Parameters
    ----------
    volume
        The tomogram (``z, y, x``, from ``open_volume``).
    options
        The filter's settings (:class:`FilterOptions`; default: its defaults). With
        ``enabled=False`` the volume is only normalized.
    target
        A spectrum table or TSV path replacing ``options.target`` (so a caller filtering many
        tomograms reads the file once).
    input_spectrum
        Overrides the measured spectrum of the normalized input.
    backend, memory_limit
        FFT backend (``auto``: torch on CUDA, else scipy) and the memory ``auto`` mode plans for.
    **settings
        Fields of :class:`FilterOptions` given one by one (``mode="exact"``), checked by its rules.

    Returns
    -------
    xarray.DataArray
        The filtered volume; ``attrs["equalization"]`` records every parameter and the target
        spectrum. The normalization statistics are computed now (one pass); in blockwise mode so is
        the input spectrum.
    """
    if options is None or settings:
        from deepict_dask.options import build

        options = build(FilterOptions, {**(options.model_dump(exclude_unset=True) if options else {}), **settings})
    if not options.enabled:
        return normalize(volume)
    mode, lowpass_cutoff, lowpass_width = options.mode, options.lowpass_cutoff, options.lowpass_width
    halo, halo_energy, max_halo = options.halo, options.halo_energy, options.max_halo
    block_size, spectrum_method = options.block_size, options.spectrum_method
    if target is None:
        target = options.target_path
    check_tomogram(volume)
    vs = voxel_size_of(volume)
    src = source_of(volume)
    shape = tuple(int(n) for n in volume.shape)
    target_df = _as_target(target)
    nyquist = 1.0 / (2.0 * max(vs))
    check_target_coverage(target_df, nyquist, lowpass_cutoff, volume_source=src)
    mode = choose_mode(shape, mode, memory_limit)
    norm = normalize(volume)
    info: dict[str, Any] = {
        "mode": mode,
        "lowpass_cutoff": lowpass_cutoff,
        "lowpass_width": lowpass_width,
        "normalization": norm.attrs["normalization"],
        "target_source": _target_source(target_df),
        "target_spectrum": {
            "freq_inv_A": [float(v) for v in target_df["freq_inv_A"]],
            "amplitude": [float(v) for v in target_df["amplitude"]],
        },
    }
    if mode == "exact":
        task = dask.delayed(exact_equalize, pure=True)(
            norm.data, vs, target_df, lowpass_cutoff, lowpass_width, input_spectrum, backend
        )
        data = da.from_delayed(task, shape, dtype=np.float32).rechunk(norm.data.chunks)
        info["input_spectrum_method"] = "exact" if input_spectrum is None else "given"
    else:
        norm_stats = (norm.attrs["normalization"]["mean"], norm.attrs["normalization"]["std"])
        stored = StoredInput.of(volume.data, norm_stats)
        if input_spectrum is None:
            input_spectrum = radial_spectrum(
                volume, method="welch" if spectrum_method == "auto" else spectrum_method, backend=backend,
                normalization=norm_stats,
            )
            info["input_spectrum_method"] = input_spectrum.attrs.get("method")
        else:
            info["input_spectrum_method"] = "given"
        filt = equalization_filter(
            input_spectrum, target_df, voxel_size=vs, lowpass_cutoff=lowpass_cutoff,
            lowpass_width=lowpass_width, volume_source=src,
        )
        max_halo = max(1, min(max_halo, min(shape) // 2))
        if halo is None:
            halo, frac = filt.choose_halo(halo_energy, max_halo)
        else:
            frac = None
        kernel = filt.truncated_kernel(int(halo), max_halo)
        if stored is not None:
            data = stored_convolve(stored, kernel, block_size)
        else:
            data = blockwise_convolve(norm.data, kernel, block_size)
        info.update(halo=int(halo), halo_energy_fraction=frac, block_size=block_size)
        info["gain"] = {"freq_inv_A": [float(v) for v in filt.freqs], "gain": [float(v) for v in filt.gain]}
    attrs = {k: v for k, v in volume.attrs.items() if k not in ("voxel_size", "origin")}
    attrs["equalization"] = info
    return make_volume(data, vs, origin_of(volume), name=volume.name, attrs=attrs)
