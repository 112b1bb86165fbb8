"""The simulation API: :func:`simulate_tomogram` returns a tomogram with all of its ground truth.

Small volumes (up to ``BLOCKWISE_VOXELS``) are rendered and imaged in one piece, with exact global
Fourier filters. Larger ones come back as lazy dask arrays rendered block by block: each block is
rendered with a halo of ``halo`` voxels, imaged with the CTF / missing wedge applied by an FFT of that
padded block, and cropped. That is the blockwise approximation of the global filters: the CTF's point
spread is a few voxels and fits in the halo, but the missing wedge's long z streaks are cut at the halo
and the noise level is set from the signal variance of one central region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import ConfigError, InputError

from .blocks import CROWDER_SIGMA, STREAM_NOISE, render_block
from .imaging import ImagingParams, filter_volume
from .placement import Scene, build_scene
from .presets import COMPARTMENTS, resolve
from .shapes import CLASS_IDS

BLOCKWISE_VOXELS = 256 * 512 * 512
DEFAULT_CHUNKS = (128, 128, 128)
CHANNELS = ("tomogram", "labels", "instance", "membrane", "compartments")


@dataclass
class SimulatedTomogram:
    """A simulated tomogram and its ground truth. Arrays are ZYX; numpy, or dask for large shapes.

    ``tomogram`` float32, zero mean, unit variance, protein *dark* (negative), as in real
    reconstructions. ``labels`` uint8 particle/filament class ids (``class_ids``, 0 = background).
    ``instance`` uint32 particle ids (= table ``instance``; 0 = none). ``membrane`` uint8 0/1.
    ``compartments`` uint8: 0 outside the cell (vacuum outside the ice slab and extracellular space),
    1 cytosol, 2 organelle (inside its outer envelope membrane), 3 vesicle lumen.
    ``table``: one row per particle, project schema plus ``phi, theta, psi`` (ZXZ, degrees),
    ``membrane_bound``, ``compartment``, ``instance``. ``filaments``: centreline points
    (``filament``, ``class``, ``point``, x, y, z, x_A, y_A, z_A). ``fiducials``: gold bead centres.
    """

    tomogram: Any
    table: pd.DataFrame
    labels: Any
    instance: Any
    membrane: Any
    compartments: Any
    filaments: pd.DataFrame
    fiducials: pd.DataFrame
    voxel_size: float
    name: str
    seed: int
    class_ids: dict[str, int] = field(default_factory=lambda: dict(CLASS_IDS))
    compartment_ids: dict[str, int] = field(default_factory=lambda: dict(COMPARTMENTS))
    params: dict[str, Any] = field(default_factory=dict)
    density: Any = None  # noise-free, CTF-free density (numpy path only)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.tomogram.shape)  # type: ignore[return-value]

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.tomogram, np.ndarray)


def simulate_tomogram(
    shape=(128, 256, 256),
    voxel_size: float = 13.48,
    seed: int = 0,
    preset: str = "cell",
    *,
    imaging: str = "defocus",
    name: str | None = None,
    blockwise: bool | None = None,
    chunks=DEFAULT_CHUNKS,
    halo: int = 16,
    **overrides,
) -> SimulatedTomogram:
    """Simulate one tomogram with its ground truth.

    ``preset``: content (``cell``, ``crowded``, ``particles``); ``imaging``: ``defocus`` or ``vpp``.
    ``overrides``: any field of :class:`~.presets.ContentParams` (e.g. ``counts={"ribosome": 50}``,
    ``crowded=0.1``, ``classes=("ribosome",)``) or :class:`~.imaging.ImagingParams` (``snr``,
    ``defocus_um``, ``tilt_min``, ``tilt_max``, ...). ``blockwise`` None: automatic by size.
    Raises :class:`~deepict_dask.errors.DeepictError` for bad input, before any heavy work.

    Parameters
    ----------
    shape : (int, int, int)
        Tomogram shape, z, y, x (voxels).
    voxel_size : float
        Angstrom per voxel.
    seed : int
        Random seed: the same seed and settings give the same tomogram.
    preset : str
        The content preset.
    imaging : str
        The imaging preset.
    name : str, optional
        The tomogram's name (default ``sim_<seed>``, e.g. ``sim_0007``).
    blockwise : bool, optional
        Render lazily in Dask blocks; None decides by size.
    chunks : int or (int, int, int)
        Block shape of the blockwise rendering.
    halo : int
        Voxels each block renders beyond its edges.
    **overrides
        Content or imaging parameters (see above).

    Returns
    -------
    SimulatedTomogram
        The tomogram with its ground truth (particle table, label volumes) and parameters.
    """
    scene, img = plan_tomogram(shape, voxel_size, seed, preset, imaging=imaging, **overrides)
    return render_tomogram(scene, img, preset=preset, imaging=imaging, name=name, blockwise=blockwise,
                           chunks=chunks, halo=halo)


def plan_tomogram(shape=(128, 256, 256), voxel_size: float = 13.48, seed: int = 0, preset: str = "cell", *,
                  imaging: str = "defocus", **overrides) -> tuple[Scene, ImagingParams]:
    """Validate the inputs and lay out the scene (placement only, cheap): raises before any rendering."""
    shape = _check_shape(shape)
    try:
        voxel_size = float(voxel_size)
    except (TypeError, ValueError):
        raise ConfigError(f"voxel size must be a number, got {voxel_size!r}") from None
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise ConfigError(f"voxel size must be > 0 Angstrom, got {voxel_size:g}")
    content, img = resolve(preset, imaging, overrides)
    return build_scene(shape, voxel_size, int(seed), content), img


def render_tomogram(scene: Scene, img: ImagingParams, *, preset: str = "", imaging: str = "", name: str | None = None,
                    blockwise: bool | None = None, chunks=DEFAULT_CHUNKS, halo: int = 16) -> SimulatedTomogram:
    """Render a planned scene (see :func:`plan_tomogram`) into a :class:`SimulatedTomogram`."""
    shape, voxel_size, seed, content = scene.shape, scene.voxel_size, scene.seed, scene.content
    name = name or f"sim_{int(seed):04d}"
    table = _table(scene, name)
    fil = _filament_table(scene, name)
    fid = _fiducial_table(scene, name)
    params = {"shape": list(shape), "voxel_size": voxel_size, "seed": int(seed), "preset": preset,
              "imaging": imaging, "content": _jsonable(content.__dict__), "imaging_params": _jsonable(img.__dict__)}
    if blockwise is None:
        blockwise = int(np.prod(shape)) > BLOCKWISE_VOXELS
    if not blockwise:
        b = render_block(scene, (0, 0, 0), shape)
        from . import randomfield

        noise = randomfield.normal(scene.seed, STREAM_NOISE, (0, 0, 0), shape)
        tomo, var_s, var_n = filter_volume(b.density, b.crowders, noise, voxel_size, img, CROWDER_SIGMA,
                                           snr_mask=b.snr_mask)
        tomo /= np.float32(np.sqrt(var_s * (1 + 1 / img.snr)) or 1.0)  # ~unit variance in the ice
        params["signal_variance"] = var_s
        return SimulatedTomogram(tomo, table, b.labels, b.instance, b.membrane, b.compartments, fil, fid,
                                 voxel_size, name, int(seed), params=params, density=b.density)
    stack = _lazy_stack(scene, img, tuple(int(c) for c in _chunks(chunks, shape)), int(halo), params)
    return SimulatedTomogram(
        stack[0], table, stack[1].astype(np.uint8), stack[2].astype(np.uint32), stack[3].astype(np.uint8),
        stack[4].astype(np.uint8), fil, fid, voxel_size, name, int(seed), params=params,
    )


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        vals = [int(s) for s in shape]
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be three integers (z y x), got {shape!r}") from None
    if len(vals) != 3:
        raise ConfigError(f"shape must be three integers (z y x), got {len(vals)} value(s)")
    if min(vals) < 8:
        raise InputError(f"shape {'x'.join(map(str, vals))} is too small: every axis needs at least 8 voxels")
    return tuple(vals)  # type: ignore[return-value]


def _chunks(chunks, shape):
    c = (chunks,) * 3 if np.isscalar(chunks) else tuple(chunks)
    if len(c) != 3 or min(c) < 16:
        raise ConfigError(f"chunks must be 1 or 3 integers >= 16, got {chunks!r}")
    return tuple(min(int(a), int(b)) for a, b in zip(c, shape))


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _table(scene: Scene, name: str) -> pd.DataFrame:
    df = scene.particles
    vs = scene.voxel_size
    out = pd.DataFrame({
        "tomo": pd.Series([name] * len(df), dtype=object),
        "class": df["class"].astype(object) if len(df) else pd.Series([], dtype=object),
        "x": df["x_A"] / vs if len(df) else [], "y": df["y_A"] / vs if len(df) else [],
        "z": df["z_A"] / vs if len(df) else [],
    })
    for col in ("x_A", "y_A", "z_A", "phi", "theta", "psi"):
        out[col] = df[col].to_numpy(float) if len(df) else np.zeros(0)
    out["membrane_bound"] = df["membrane_bound"].to_numpy(bool) if len(df) else np.zeros(0, bool)
    out["compartment"] = df["compartment"].to_numpy(np.uint8) if len(df) else np.zeros(0, np.uint8)
    out["instance"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return out


def _filament_table(scene: Scene, name: str) -> pd.DataFrame:
    rows = []
    vs = scene.voxel_size
    for i, f in enumerate(scene.filaments):
        p = f.points
        rows.append(pd.DataFrame({
            "tomo": name, "filament": i + 1, "class": f.kind, "point": np.arange(len(p)),
            "x": p[:, 0] / vs, "y": p[:, 1] / vs, "z": p[:, 2] / vs, "x_A": p[:, 0], "y_A": p[:, 1], "z_A": p[:, 2],
        }))
    cols = ["tomo", "filament", "class", "point", "x", "y", "z", "x_A", "y_A", "z_A"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({c: [] for c in cols})


def _fiducial_table(scene: Scene, name: str) -> pd.DataFrame:
    p = scene.fiducials
    vs = scene.voxel_size
    return pd.DataFrame({
        "tomo": [name] * len(p), "class": ["gold"] * len(p), "x": p[:, 0] / vs, "y": p[:, 1] / vs,
        "z": p[:, 2] / vs, "x_A": p[:, 0], "y_A": p[:, 1], "z_A": p[:, 2],
    })


# --------------------------------------------------------------------------- blockwise
def _noise_scale(scene: Scene, img: ImagingParams) -> tuple[float, float]:
    """(noise scale for unit white noise, signal variance), measured on one central region."""
    from . import randomfield

    shape = np.array(scene.shape)
    sub = np.minimum(shape, (128, 256, 256))
    lo = (shape - sub) // 2
    b = render_block(scene, lo, sub)
    noise = randomfield.normal(scene.seed, STREAM_NOISE, lo, sub)
    _, var_s, var_n = filter_volume(b.density, b.crowders, noise, scene.voxel_size, img, CROWDER_SIGMA,
                                    snr_mask=b.snr_mask)
    return float(np.sqrt(var_s / img.snr / max(var_n, 1e-30))), var_s


def _lazy_stack(scene: Scene, img: ImagingParams, chunks, halo: int, params: dict):
    import dask.array as da

    from . import randomfield

    scale, var_s = _noise_scale(scene, img)
    norm = np.float32(np.sqrt(var_s * (1 + 1 / img.snr)) or 1.0)
    params["signal_variance"] = var_s
    params["blockwise"] = {"chunks": list(chunks), "halo": halo}
    full = np.array(scene.shape)

    def render(block_info=None):
        loc = block_info[None]["array-location"][1:]
        lo = np.array([a for a, _ in loc])
        hi = np.array([b for _, b in loc])
        elo = lo - halo
        ehi = hi + halo
        b = render_block(scene, elo, ehi - elo)
        noise = randomfield.normal(scene.seed, STREAM_NOISE, elo, ehi - elo)
        tomo, _, _ = filter_volume(b.density, b.crowders, noise, scene.voxel_size, img, CROWDER_SIGMA, noise_scale=scale)
        crop = tuple(slice(halo, halo + int(h - l)) for l, h in zip(lo, hi))  # noqa: E741
        out = np.empty((len(CHANNELS),) + tuple(hi - lo), np.float32)
        out[0] = tomo[crop] / norm
        out[1] = b.labels[crop]
        out[2] = b.instance[crop]
        out[3] = b.membrane[crop]
        out[4] = b.compartments[crop]
        return out

    c = tuple(_split(int(n), int(k)) for n, k in zip(full, chunks))
    return da.map_blocks(render, dtype=np.float32, chunks=((len(CHANNELS),),) + c, meta=np.empty((0,) * 4, np.float32))


def _split(n: int, k: int) -> tuple[int, ...]:
    sizes = [k] * (n // k)
    if n % k:
        sizes.append(n % k)
    return tuple(sizes)
