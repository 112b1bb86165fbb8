"""Benchmark of the amplitude-spectrum equalization filter (``deepict filter``).

Figures (one run, same work for project and baseline):

* ``blockwise_rel_rms_interior`` / ``blockwise_rel_rms_all``: relative RMS difference between the
  blockwise (overlap-save, truncated kernel) and exact (whole-volume FFT) results, same filter,
  interior = voxels at least ``halo`` from every face; target < 0.01.
* ``blockwise_peak_mb_<shape>`` and ``blockwise_peak_ratio``: peak resident memory (VmHWM) of the
  busiest worker of a fresh LocalCluster (2 single-threaded workers, as ``deepict filter`` starts)
  running the CLI's ``--mode blockwise`` path (Welch spectrum, overlap-save filter, OME-Zarr pyramid
  written) on an OME-Zarr tomogram of noise plus structure written chunk by chunk, at the issue's
  sizes 256^3 and 512 x 1024 x 1024 (32x the voxels); target ratio <= 1.3 (memory independent of
  the volume). ``_idle_mb`` is a worker's RSS after imports.
* ``welch_vs_exact_spectrum_*``: the blockwise output with the default (Welch) input spectrum
  against the same filter with a whole-volume (exact) spectrum, the former ``auto`` choice for
  volumes that fit a worker: correlation, relative RMS and largest absolute difference (normalized
  units).
* ``exact_over_numpy_roundtrip``: time of the exact filter (spectrum + gain + one rfftn/irfftn pair,
  in memory) over a plain ``numpy.fft.rfftn`` + ``irfftn`` round trip of the same volume; target <= 1.5.

Run: ``python benchmarks/bench_filter.py [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import peak_rss_mb  # noqa: E402
from benchmarks.targets import targets_report  # noqa: E402

ISSUE_MEMORY_SHAPES = ((256, 256, 256), (512, 1024, 1024))
TARGETS = (  # (figure, comparison, bound, what)
    ("blockwise_rel_rms_interior", "<=", 0.01, "blockwise vs exact filter, same gain, interior"),
    ("blockwise_peak_ratio", "<=", 1.3, "peak worker memory of blockwise filter, larger vs smaller tomogram"),
    ("exact_over_numpy_roundtrip", "<=", 1.5, "exact filter time / numpy rfftn+irfftn"),
)


def _tomogram(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 2.0) * 10
    return (x + rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def accuracy(n: int) -> dict:
    from deepict_dask.io.volume import make_volume
    from deepict_dask.preprocess import apply_filter, normalize, radial_spectrum

    vol = make_volume(_tomogram((n, n, n)), 10.0, chunks=64)
    with dask.config.set(scheduler="threads"):
        spec = radial_spectrum(normalize(vol), method="welch", window=64)
        exact = apply_filter(vol, mode="exact", input_spectrum=spec).values
        block = apply_filter(vol, mode="blockwise", input_spectrum=spec, block_size=64)
        halo = block.attrs["equalization"]["halo"]
        b = block.values
    inner = (slice(halo, -halo),) * 3
    rel = lambda a, e: float(np.sqrt(np.mean((a - e) ** 2) / np.mean(e**2)))  # noqa: E731
    return {
        "accuracy_volume": n,
        "blockwise_halo": halo,
        "blockwise_rel_rms_interior": rel(b[inner], exact[inner]),
        "blockwise_rel_rms_all": rel(b, exact),
    }


def write_tomogram(path: Path, shape: tuple[int, int, int], chunk: int = 128) -> None:
    """Noise plus a smooth 3D texture as a one-level OME-Zarr, generated chunk by chunk (never whole)."""
    from deepict_dask.io import write_ome_zarr
    from deepict_dask.io.volume import make_volume

    def block(block_info=None) -> np.ndarray:
        loc = block_info[None]["array-location"]
        rng = np.random.default_rng([a for a, _ in loc])
        z, y, x = np.ogrid[tuple(slice(a, b) for a, b in loc)]
        texture = np.sin(z / 7.0) * np.cos(y / 11.0) * np.sin(x / 5.0)
        return (rng.standard_normal(block_info[None]["chunk-shape"], dtype=np.float32) + 2 * texture).astype(np.float32)

    chunks = tuple(tuple(min(chunk, n - i) for i in range(0, n, chunk)) for n in shape)
    data = da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
    with dask.config.set(scheduler="threads"):
        write_ome_zarr(make_volume(data, 10.0), path, levels=1, chunks=chunk)


def blockwise_peak_mb(shape: tuple[int, int, int], workdir: Path) -> tuple[float, float]:
    """Peak worker VmHWM (MB) of ``deepict filter --mode blockwise`` on a ``shape`` tomogram; also the idle RSS."""
    from deepict_dask.cluster import ClusterSpec, dask_client
    from deepict_dask.io import open_volume
    from deepict_dask.preprocess.files import filter_to_zarr
    from deepict_dask.preprocess.options import FilterOptions

    src, out = workdir / "in.ome.zarr", workdir / "out" / "in.ome.zarr"
    write_tomogram(src, shape)
    spec = ClusterSpec(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    try:
        with dask_client(spec, quiet=True) as client:
            client.run(lambda: __import__("deepict_dask.preprocess"))
            idle = max(client.run(peak_rss_mb).values())
            filter_to_zarr(open_volume(src), out, FilterOptions(mode="blockwise"))
            peak = max(client.run(peak_rss_mb).values())
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out.parent, ignore_errors=True)
    return peak, idle


def welch_vs_exact(n: int) -> dict:
    """Blockwise output with the Welch input spectrum (default) vs with the whole-volume spectrum."""
    from deepict_dask.io.volume import make_volume
    from deepict_dask.preprocess import apply_filter

    vol = make_volume(_tomogram((n, n, n)), 10.0, chunks=128)
    with dask.config.set(scheduler="threads"):
        welch = apply_filter(vol, mode="blockwise").values
        exact = apply_filter(vol, mode="blockwise", spectrum_method="exact").values
    return {
        "welch_vs_exact_spectrum_volume": n,
        "welch_vs_exact_spectrum_corr": float(np.corrcoef(welch.ravel(), exact.ravel())[0, 1]),
        "welch_vs_exact_spectrum_rel_rms": float(np.sqrt(np.mean((welch - exact) ** 2) / np.mean(exact**2))),
        "welch_vs_exact_spectrum_max_abs": float(np.max(np.abs(welch - exact))),
        "welch_vs_exact_spectrum_mean_abs": float(np.mean(np.abs(welch - exact))),
    }


def speed(n: int, repeats: int = 3) -> dict:
    from deepict_dask.preprocess import default_target, exact_equalize

    x = _tomogram((n, n, n))
    x = (x - x.mean()) / x.std()
    target = default_target()

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_numpy = best(lambda: np.fft.irfftn(np.fft.rfftn(x), s=x.shape, axes=(0, 1, 2)))
    t_exact = best(lambda: exact_equalize(x, (10.0, 10.0, 10.0), target, backend="scipy"))
    return {
        "speed_volume": n,
        "numpy_roundtrip_s": t_numpy,
        "exact_filter_s": t_exact,
        "exact_over_numpy_roundtrip": t_exact / t_numpy,
    }


def run(quick: bool) -> dict:
    out: dict = {}
    out.update(accuracy(128 if quick else 192))
    out.update(speed(128 if quick else 256))
    out.update(welch_vs_exact(128 if quick else 256))
    sizes = ((64, 64, 64), (64, 128, 128)) if quick else ISSUE_MEMORY_SHAPES
    peaks = []
    for shape in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            peak, idle = blockwise_peak_mb(shape, Path(tmp))
        out[f"blockwise_peak_mb_{'x'.join(map(str, shape))}"] = peak
        out[f"blockwise_idle_mb_{'x'.join(map(str, shape))}"] = idle
        peaks.append(peak)
    out["blockwise_peak_ratio"] = peaks[1] / peaks[0]
    return out



if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes (64^3 and 64x128x128 for memory)")
    res = run(parser.parse_args().quick)
    for key, value in res.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print("\n".join(targets_report(res, TARGETS)))
