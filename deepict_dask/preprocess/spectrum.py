"""Radially averaged Fourier amplitude spectra of tomograms, and their TSV files.

Amplitude convention: with an orthonormal FFT, ``amplitude(k) = sqrt(mean |F|^2 over the shell at
k)`` (the RMS amplitude of the shell). White noise of variance s^2 has a flat spectrum of amplitude s
whatever the volume size, so spectra from tomograms of different sizes are directly comparable.

Estimators (``method``):

* ``exact``: one real FFT of the whole volume, in a single dask task (needs the volume in memory).
* ``welch``: average of the power spectra of windowed sub-volumes (a 3D Welch estimator): cubic
  windows of ``window`` voxels (capped by the volume), 50 % overlap along each axis, each window
  mean-subtracted and tapered with a separable Hann window, power divided by the taper's mean
  square; each block of the volume owns the windows that start in it and looks half a window into the
  next, so it runs as one task per block plus a tree reduction. When the volume is stored in a file
  (MRC, Zarr) every task reads its block and look-ahead itself (:mod:`.stored`), so a worker holds a
  few blocks whatever the volume size; otherwise blocks are assembled from dask chunks. Its frequency
  resolution is that of the window (``1 / (window * voxel)``) and its variance falls with the number of
  windows; the taper removes the cross-shaped leakage that the volume's borders cause in ``exact``.
* ``auto``: ``exact`` when the volume is no larger than one Welch window (``window``^3 voxels, where
  Welch would have a single window anyway), else ``welch``: memory is bounded by the window, never
  by the volume. Only an explicit ``exact`` transforms a large volume at once.

TSV format (what :func:`write_spectrum` writes and :func:`read_spectrum` accepts): optional ``#``
comment lines (``# key: value`` metadata), then a header row with the tab-separated columns
``freq_inv_A``, ``freq_nyquist``, ``amplitude``, then one row per shell, frequency increasing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.progress import compute
from deepict_dask.io.volume import voxel_size_of
from deepict_dask.preprocess.kernels import RadialGrid, even_chunks, get_backend, power_spectrum, welch_power
from deepict_dask.preprocess.normalize import check_tomogram, source_of, zscore
from deepict_dask.preprocess.stored import StoredInput, block_bounds

COLUMNS = ("freq_inv_A", "freq_nyquist", "amplitude")
DEFAULT_WINDOW = 128


def spectrum_frame(
    psum: np.ndarray, count: np.ndarray, grid: RadialGrid, meta: dict | None = None
) -> pd.DataFrame:
    """Turn per-shell power sums and sample counts into the spectrum table (empty shells dropped)."""
    keep = count > 0
    freqs = grid.freqs[keep]
    df = pd.DataFrame(
        {
            "freq_inv_A": freqs,
            "freq_nyquist": freqs / grid.nyquist,
            "amplitude": np.sqrt(psum[keep] / count[keep]),
        }
    )
    df.attrs.update(meta or {})
    df.attrs.setdefault("voxel_size", tuple(float(v) for v in grid.voxel_size))
    return df


def radial_spectrum(
    volume: xr.DataArray,
    *,
    method: str = "auto",
    window: int = DEFAULT_WINDOW,
    backend: str = "auto",
    normalization: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Radially averaged amplitude spectrum of a 3D volume (computed now, with dask).

    Returns a DataFrame with columns ``freq_inv_A``, ``freq_nyquist``, ``amplitude`` (see module
    docstring for the estimators). It does not normalize: pass a normalized volume, or the raw one
    with its ``normalization=(mean, std)`` (lets Welch tasks read a stored volume's file directly),
    to compare spectra of different tomograms.
    """
    check_tomogram(volume)
    vs = voxel_size_of(volume)
    shape = tuple(int(n) for n in volume.shape)
    if method == "auto":
        method = "exact" if auto_is_exact(shape, window) else "welch"
    data = volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    stored = StoredInput.of(data, normalization)
    if normalization is not None:
        data = zscore(data, *normalization)
    meta = {"method": method, "source": source_of(volume), "shape": shape}
    if method == "exact":
        grid = RadialGrid(shape, vs)
        (psum, count), = compute(dask.delayed(_exact_sums, pure=True)(data, vs, backend))
        return spectrum_frame(psum, count, grid, meta)
    if method == "welch":
        return _welch(data, vs, window, meta, stored)
    raise ValueError(f"unknown spectrum method {method!r}; use auto, exact or welch")


def auto_is_exact(shape: tuple[int, ...], window: int = DEFAULT_WINDOW) -> bool:
    """Whether ``method='auto'`` transforms the whole volume: only when it fits in one Welch window."""
    return int(np.prod(shape, dtype=np.int64)) <= int(window) ** 3


def _exact_sums(x: np.ndarray, vs: tuple[float, float, float], backend: str) -> tuple[np.ndarray, np.ndarray]:
    return power_spectrum(get_backend(backend), x, vs)


def _welch(
    data: da.Array, vs: tuple[float, float, float], window: int, meta: dict, stored: StoredInput | None = None
) -> pd.DataFrame:
    if window < 4:
        raise ValueError(f"Welch window must be at least 4 voxels, got {window}")
    win = tuple(min(int(window), n) for n in data.shape)
    # Block cores on multiples of half a window (so all blocks share one window lattice), at least
    # one window long; each block looks half a window ahead into the next to finish its windows.
    steps = [max(w // 2, 1) for w in win]
    chunks = tuple(
        even_chunks(n, max(w, -(-max(c) // s) * s), w) for n, c, w, s in zip(data.shape, data.chunks, win, steps)
    )
    ahead = tuple(w - s if len(c) > 1 else 0 for w, s, c in zip(win, steps, chunks))
    grid = RadialGrid(win, vs)
    n = grid.nbins
    nb = tuple(len(c) for c in chunks)
    out_chunks = ((1,) * nb[0], (1,) * nb[1], (1,) * nb[2], (2 * n + 1,))
    if stored is not None:
        plan = _WelchPlan(stored, chunks, ahead, win, vs)
        parts = da.map_blocks(_welch_stored_block, plan, chunks=out_chunks, dtype=np.float64,
                              meta=np.empty((0, 0, 0, 0), np.float64))
    else:
        parts = da.map_overlap(
            _welch_block,
            data.rechunk(chunks),
            depth={i: (0, a) for i, a in enumerate(ahead)},
            boundary="none",
            trim=False,
            allow_rechunk=False,
            new_axis=3,
            chunks=out_chunks,
            dtype=np.float64,
            meta=np.empty((0, 0, 0, 0), np.float64),
            core_chunks=chunks,
            win=win,
            vs=vs,
        )
    (sums,) = compute(parts.sum(axis=(0, 1, 2)))
    psum, count, nwin = sums[:n], sums[n : 2 * n], int(sums[-1])
    if nwin == 0:
        raise InputError("no Welch window fits inside the volume", meta.get("source"))
    meta = dict(meta, window=win, n_windows=nwin)
    return spectrum_frame(psum, count, grid, meta)


@dataclass(frozen=True)
class _WelchPlan:
    """What a Welch task on a stored volume needs; it finds its block from its block index."""

    stored: StoredInput
    chunks: tuple[tuple[int, ...], ...]
    ahead: tuple[int, ...]
    win: tuple[int, int, int]
    vs: tuple[float, float, float]


def _welch_stored_block(plan: _WelchPlan, block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """Read the block and its look-ahead from the file, then sum the Welch windows it owns."""
    bounds = block_bounds(plan.chunks, block_id[:3])
    lo = tuple(a for a, _ in bounds)
    hi = tuple(min(b + d, n) for (_, b), d, n in zip(bounds, plan.ahead, plan.stored.shape))
    core = tuple(b - a for a, b in bounds)
    return welch_power(plan.stored.read(lo, hi), core, plan.win, plan.vs)[None, None, None, :]


def _welch_block(
    block: np.ndarray,
    core_chunks: tuple[tuple[int, ...], ...],
    win: tuple[int, int, int],
    vs: tuple[float, float, float],
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    core = tuple(int(c[i]) for c, i in zip(core_chunks, block_id[:3]))
    return welch_power(block, core, win, vs)[None, None, None, :]


def write_spectrum(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a spectrum table as TSV (atomically), with its metadata as ``#`` comment lines."""
    frame = validate_spectrum(df, path)
    path = Path(path)
    lines = ["# deepict radial amplitude spectrum (RMS amplitude per shell, orthonormal FFT)"]
    for key, value in df.attrs.items():
        if value is not None:
            lines.append(f"# {key}: {value}")
    body = frame.loc[:, list(COLUMNS)].to_csv(sep="\t", index=False, float_format="%.8g")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n" + body)
    return path


def read_spectrum(path: str | os.PathLike) -> pd.DataFrame:
    """Read a spectrum TSV written by :func:`write_spectrum` (or by hand in the same format)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("spectrum file not found", path)
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"cannot read spectrum file as text: {exc}", path) from exc
    meta = {}
    for line in text.splitlines():
        if line.startswith("#") and ":" in line:
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
    try:
        df = pd.read_csv(path, sep="\t", comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InputError(f"not a spectrum TSV: {exc}", path) from exc
    df = validate_spectrum(df, path)
    df.attrs.update(meta)
    df.attrs["source"] = str(path)
    return df


def validate_spectrum(df: pd.DataFrame, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Check a spectrum table's columns and values; return it with float columns in frequency order."""
    where = path if path is not None else df.attrs.get("source")
    missing = [c for c in ("freq_inv_A", "amplitude") if c not in df.columns]
    if missing:
        raise InputError(
            f"not a spectrum table: missing column(s) {', '.join(missing)} "
            f"(expected tab-separated columns {', '.join(COLUMNS)}; found {', '.join(map(str, df.columns)) or 'none'})",
            where,
        )
    out = pd.DataFrame(index=range(len(df)))
    for col in COLUMNS:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise InputError(f"column {col} has missing or non-numeric values", where)
        out[col] = values
    if len(out) < 3:
        raise InputError(f"a spectrum needs at least 3 rows, found {len(out)}", where)
    f = out["freq_inv_A"].to_numpy()
    if np.any(f < 0) or np.any(np.diff(f) <= 0):
        raise InputError("freq_inv_A must be non-negative and strictly increasing", where)
    if np.any(out["amplitude"].to_numpy() < 0):
        raise InputError("amplitude must be non-negative", where)
    if "freq_nyquist" not in out.columns:
        out["freq_nyquist"] = np.nan
    out.attrs.update(df.attrs)
    return out.loc[:, list(COLUMNS)]


def default_target() -> pd.DataFrame:
    """The target spectrum shipped with the package (see ``examples/make_default_target.py``)."""
    ref = resources.files("deepict_dask") / "data" / "target_spectrum.tsv"
    with resources.as_file(ref) as path:
        return read_spectrum(path)
