"""Benchmark of the amplitude-spectrum equalization filter (``deepict filter``).

Figures (one run, same work for project and baseline):

* ``blockwise_rel_rms_interior`` / ``blockwise_rel_rms_all``: relative RMS difference between the
  blockwise (overlap-save, truncated kernel) and exact (whole-volume FFT) results, same filter,
  interior = voxels at least ``halo`` from every face; target < 0.01.
* ``blockwise_peak_mb_small`` / ``_large`` and ``blockwise_peak_ratio``: peak RSS of the single
  worker process of a fresh LocalCluster filtering a Zarr tomogram into a Zarr store (normalize,
  Welch spectrum, overlap-save filter), at two sizes (15.6x the voxels); ``_growth_`` is the peak
  above the worker's RSS after imports. Memory is independent of size when the ratio is close to 1.
* ``exact_over_numpy_roundtrip``: time of the exact filter (spectrum + gain + one rfftn/irfftn pair,
  in memory) over a plain ``numpy.fft.rfftn`` + ``irfftn`` round trip of the same volume; target <= 1.5.

Run: ``python benchmarks/bench_filter.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import peak_rss_mb  # noqa: E402


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


def blockwise_peak_mb(n: int, workdir: Path) -> tuple[float, float]:
    """Peak RSS (MB) of one worker filtering an n^3 Zarr tomogram blockwise; also the idle RSS."""
    from distributed import Client, LocalCluster

    from deepict_dask.io.volume import make_volume
    from deepict_dask.preprocess import apply_filter

    src = workdir / f"in{n}.zarr"
    rng = da.random.default_rng(1)
    (rng.standard_normal((n, n, n), chunks=64, dtype=np.float32) + 1).to_zarr(str(src), overwrite=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="4GiB", dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(lambda: __import__("deepict_dask.preprocess"))
            idle = max(client.run(peak_rss_mb).values())
            vol = make_volume(da.from_zarr(str(src)), 10.0)
            out = apply_filter(vol, mode="blockwise", halo=12, block_size=64, spectrum_method="welch")
            out.data.to_zarr(str(workdir / f"out{n}.zarr"), overwrite=True)
            peak = max(client.run(peak_rss_mb).values())
    return peak, idle


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
    small, large = (96, 192) if quick else (128, 320)
    with tempfile.TemporaryDirectory() as tmp:
        p_small, idle_small = blockwise_peak_mb(small, Path(tmp))
        p_large, idle_large = blockwise_peak_mb(large, Path(tmp))
    out.update(
        {
            "blockwise_small_volume": small,
            "blockwise_large_volume": large,
            "blockwise_idle_mb": max(idle_small, idle_large),
            "blockwise_peak_mb_small": p_small,
            "blockwise_peak_mb_large": p_large,
            "blockwise_peak_ratio": p_large / p_small,
            "blockwise_growth_mb_small": p_small - idle_small,
            "blockwise_growth_mb_large": p_large - idle_large,
            "input_mb_small": small**3 * 4 / 2**20,
            "input_mb_large": large**3 * 4 / 2**20,
        }
    )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes")
    for key, value in run(parser.parse_args().quick).items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
