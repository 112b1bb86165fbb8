"""Imaging model: contrast transfer function, missing wedge, noise.

Why a 3D radial CTF: in a tomogram each central section of the 3D spectrum comes from one tilt image,
and every frequency vector in that section lies in the image plane, so (ignoring defocus gradients
across the specimen) the reconstruction is the density filtered by ``CTF(|k|)``.

CTF (underfocus ``defocus`` > 0, Angstrom; ``k`` in 1/Angstrom)::

    chi(k) = pi * lambda * defocus * k^2 - pi/2 * Cs * lambda^3 * k^4 + phase_shift
    CTF(k) = (sqrt(1 - A^2) sin(chi) + A cos(chi)) * exp(-B k^2 / 4)

so ``CTF(0) = A`` (or 1 with a 90 degree phase plate), its zeros fall at ``chi = n*pi`` and each
zero flips the phase. The missing wedge of a tilt series about Y from ``tilt_min..tilt_max``: a
Fourier voxel ``(kz, ky, kx)`` was measured only if ``|kz| <= |kx| tan(max tilt)`` (asymmetric ranges
use the side of ``kz/kx``). Noise is white in the projections, so it is not CTF-modulated but does
carry the missing wedge. Sign: the tomogram is ``-(CTF * density)``, so protein (positive density)
is *dark* as in real reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.fft as sfft


@dataclass
class ImagingParams:
    """Acquisition and reconstruction parameters (Angstrom, degrees, kV, mm)."""

    defocus_um: float = 4.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    phase_shift_deg: float = 0.0
    bfactor: float = 300.0
    tilt_min: float = -60.0
    tilt_max: float = 60.0
    snr: float = 0.1
    ctf: bool = True
    missing_wedge: bool = True

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


#: "defocus": conventional defocus contrast, low SNR. "vpp": Volta phase plate, close to focus, a
#: 90 degree phase shift (strong low-frequency contrast) and a higher SNR.
IMAGING_PRESETS: dict[str, dict] = {
    "defocus": dict(defocus_um=4.0, phase_shift_deg=0.0, snr=0.2, bfactor=300.0),
    "vpp": dict(defocus_um=0.5, phase_shift_deg=90.0, snr=0.4, bfactor=300.0),
}


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom."""
    v = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_1d(k: np.ndarray, p: ImagingParams) -> np.ndarray:
    """The CTF (with envelope) at spatial frequencies ``k`` (1/Angstrom)."""
    lam = electron_wavelength(p.voltage_kv)
    df = p.defocus_um * 1e4
    cs = p.cs_mm * 1e7
    chi = np.pi * lam * df * k**2 - 0.5 * np.pi * cs * lam**3 * k**4 + np.deg2rad(p.phase_shift_deg)
    a = p.amplitude_contrast
    return (np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-p.bfactor * k**2 / 4)


def ctf_zeros(p: ImagingParams, k_max: float) -> np.ndarray:
    """Spatial frequencies (1/Angstrom) of the CTF zeros below ``k_max`` (for checks and plots)."""
    k = np.linspace(0, k_max, 200001)
    c = ctf_1d(k, ImagingParams(**{**p.__dict__, "bfactor": 0.0}))
    s = np.nonzero(np.signbit(c[1:]) != np.signbit(c[:-1]))[0]
    return k[s]


def _freqs(shape, voxel_size: float):
    kz = sfft.fftfreq(shape[0], d=voxel_size).astype(np.float32)[:, None, None]
    ky = sfft.fftfreq(shape[1], d=voxel_size).astype(np.float32)[None, :, None]
    kx = sfft.rfftfreq(shape[2], d=voxel_size).astype(np.float32)[None, None, :]
    return kz, ky, kx


def wedge_mask(shape, voxel_size: float, p: ImagingParams) -> np.ndarray:
    """Boolean rfft-layout mask of the measured Fourier region (tilt axis Y)."""
    kz, ky, kx = _freqs(shape, voxel_size)
    if not p.missing_wedge:
        return np.ones(np.broadcast_shapes(kz.shape, ky.shape, kx.shape), bool)
    # The beam is along z at tilt 0; a tilt of alpha about y measures the plane normal to
    # (sin(alpha), 0, cos(alpha)) in (x, y, z), i.e. kz = -tan(alpha) kx. With kx >= 0 (rfft half)
    # the measured region is tan(tilt_min) kx <= -kz <= tan(tilt_max) kx; the ky axis is always in.
    eps = np.float32(1e-9)
    m = (-kz <= kx * np.float32(np.tan(np.deg2rad(p.tilt_max))) + eps) & (
        -kz >= kx * np.float32(np.tan(np.deg2rad(p.tilt_min))) - eps
    )
    return np.broadcast_to(m, np.broadcast_shapes(kz.shape, ky.shape, kx.shape))


def transfer(shape, voxel_size: float, p: ImagingParams) -> tuple[np.ndarray, np.ndarray]:
    """(signal transfer ``-CTF * wedge``, noise transfer ``wedge``) in rfft layout, float32."""
    kz, ky, kx = _freqs(shape, voxel_size)
    k = np.sqrt(kz * kz + ky * ky + kx * kx)
    w = wedge_mask(shape, voxel_size, p).astype(np.float32)
    if p.ctf:  # radial: tabulate finely and interpolate (far cheaper than sin/cos on every voxel)
        table_k = np.linspace(0, float(k.max()) + 1e-9, 32769)
        c = np.interp(k, table_k, ctf_1d(table_k, p)).astype(np.float32)
    else:
        c = np.float32(1.0)
    return (-c * w).astype(np.float32), w


def filter_volume(
    density: np.ndarray, crowders: np.ndarray | None, noise: np.ndarray | None, voxel_size: float,
    p: ImagingParams, crowder_sigma: float, *, snr_mask: np.ndarray | None = None,
    noise_scale: float | None = None,
) -> tuple[np.ndarray, float, float]:
    """Image a density: ``(tomogram, signal variance, variance of the filtered unit noise)``.

    ``crowders`` (a sparse field of point masses) is blurred by a Gaussian of ``crowder_sigma``
    Angstrom before the CTF. The signal variance is taken over ``snr_mask`` (the ice, away from gold
    beads, whose huge contrast would otherwise set the noise level). With ``noise_scale`` None the
    noise is scaled to reach ``p.snr`` in this volume; otherwise it is multiplied by ``noise_scale``.
    """
    shape = density.shape
    h_sig, h_noise = transfer(shape, voxel_size, p)
    f = sfft.rfftn(density, workers=1)
    if crowders is not None:
        kz, ky, kx = _freqs(shape, voxel_size)
        g = np.exp(-2 * np.pi**2 * crowder_sigma**2 * (kz * kz + ky * ky + kx * kx)).astype(np.float32)
        f += sfft.rfftn(crowders, workers=1) * g
    f *= h_sig
    f[0, 0, 0] = 0
    signal = sfft.irfftn(f, s=shape, workers=1).astype(np.float32)
    del f
    sel = signal[snr_mask] if snr_mask is not None and snr_mask.any() else signal
    var_s = float(np.var(sel, dtype=np.float64))
    if noise is None:
        return signal, var_s, 0.0
    fn = sfft.rfftn(noise, workers=1) * h_noise
    fn[0, 0, 0] = 0
    n = sfft.irfftn(fn, s=shape, workers=1).astype(np.float32)
    var_n = float(np.var(n, dtype=np.float64))
    if noise_scale is None:
        noise_scale = float(np.sqrt(var_s / max(p.snr, 1e-12) / max(var_n, 1e-30)))
    signal += np.float32(noise_scale) * n
    return signal, var_s, var_n


def _rfft_power(f: np.ndarray, nx: int) -> float:
    """Sum of |F|^2 over the full spectrum, from an rfft half-spectrum of a last axis of length nx."""
    p = np.abs(f) ** 2
    total = 2 * p.sum(dtype=np.float64) - p[..., 0].sum(dtype=np.float64)
    if nx % 2 == 0 and nx > 1:  # the Nyquist plane is unique too
        total -= p[..., -1].sum(dtype=np.float64)
    return float(total)
