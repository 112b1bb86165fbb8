"""deepict pick: speed against single-process scipy, bounded memory at 200,000 clusters, library choices.

1. A 512^3 probability map with ~20,000 clusters (balls of radius 1.5..3.5 voxels on a jittered
   lattice) stored as a Zarr array. Baseline: ``scipy.ndimage.label`` + ``center_of_mass`` in one
   process on the in-memory map (no I/O). Ours: ``pick`` reading the Zarr store on a LocalCluster of
   2 single-threaded worker processes (I/O included; cluster start-up and worker imports excluded by one untimed run). Ratio = ours / scipy.
2. A 512^3 map with 200,000 clusters through ``pick``: time and peak RSS of the workers (sampled
   every 20 ms on a fresh cluster; the map itself is 512 MiB of float32).
3. Library choices on one 256^3 block: scipy vs cc3d labelling, dask-image ``ndmeasure.label`` on the
   same block chunked 128^3, and per-label statistics by our bincount/sort partials vs
   ``cc3d.statistics`` vs ``scipy.ndimage.center_of_mass``.

    python benchmarks/bench_pick.py [--quick]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def synthetic_map(shape: tuple[int, int, int], n: int, spacing: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Float32 map with ``n`` separate balls on a jittered lattice (values 0.6..1 inside, noise < 0.3)."""
    rng = np.random.default_rng(seed)
    vol = (rng.random(shape, dtype=np.float32) * 0.3).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(spacing // 2, s - spacing // 2, spacing) for s in shape], indexing="ij"), -1)
    sites = grid.reshape(-1, 3)
    sites = sites[rng.choice(len(sites), size=min(n, len(sites)), replace=False)]
    rmax = (spacing - 2) / 2
    balls = {}
    for c in sites:
        r = float(rng.uniform(min(1.5, rmax), min(3.5, rmax)))
        j = np.clip(c + rng.integers(-1, 2, 3) * (spacing > 8), 4, np.asarray(shape) - 5)
        key = round(r, 1)
        if key not in balls:
            k = int(np.ceil(key))
            zz, yy, xx = np.mgrid[-k:k + 1, -k:k + 1, -k:k + 1]
            balls[key] = (zz**2 + yy**2 + xx**2 <= key**2, k)
        ball, k = balls[key]
        sl = tuple(slice(int(a) - k, int(a) + k + 1) for a in j)
        vol[sl][ball] = rng.uniform(0.6, 1.0)
    return vol, len(sites)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RssSampler:
    """Peak resident memory of the worker processes, sampled every 20 ms while the work runs."""

    def __init__(self, client):
        import os

        import psutil

        self.procs = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        self.peak_each = 0.0
        self.peak_sum = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = [p.memory_info().rss / 2**20 for p in self.procs]
            self.peak_each = max(self.peak_each, max(rss))
            self.peak_sum = max(self.peak_sum, sum(rss))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _scipy_baseline(vol: np.ndarray, threshold: float) -> tuple[float, int]:
    import scipy.ndimage as ndi

    t = time.perf_counter()
    fg = vol >= threshold
    lab, n = ndi.label(fg, np.ones((3, 3, 3)))
    ndi.center_of_mass(fg, lab, np.arange(1, n + 1))
    return time.perf_counter() - t, n


def _pick_zarr(path: Path, chunks: int, threshold: float):
    from deepict_dask.io import open_volume
    from deepict_dask.pick.api import pick
    from deepict_dask.pick.options import PickOptions

    vol = open_volume(path, chunks=chunks)
    t = time.perf_counter()
    res = pick(vol, PickOptions(threshold=threshold, connectivity=26))
    return time.perf_counter() - t, res


def _warm_up(path: Path, chunks: int, threshold: float) -> None:
    """One untimed run: imports (zarr, cc3d, scipy, pandas) on every worker are start-up cost."""
    _pick_zarr(path, chunks, threshold)


def _write_zarr(vol: np.ndarray, path: Path, chunk: int) -> None:
    import zarr

    z = zarr.create_array(str(path), shape=vol.shape, chunks=(chunk,) * 3, dtype=vol.dtype)
    z[:] = vol
    z.attrs["voxel_size"] = [10.0, 10.0, 10.0]


def _library_choices(block: np.ndarray, threshold: float) -> dict[str, float]:
    import cc3d
    import dask.array as da
    import scipy.ndimage as ndi
    from dask_image import ndmeasure

    from deepict_dask.pick.stats import block_partials

    out: dict[str, float] = {}
    fg = block >= threshold
    t = time.perf_counter()
    ref, n = ndi.label(fg, np.ones((3, 3, 3)))
    out["block_label_scipy_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lab = cc3d.connected_components(fg, connectivity=26)
    out["block_label_cc3d_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lab_di, _ = ndmeasure.label(da.from_array(fg, chunks=128), structure=np.ones((3, 3, 3)))
    lab_di.compute(scheduler="threads")
    out["block_label_dask_image_s"] = time.perf_counter() - t
    t = time.perf_counter()
    block_partials(lab, np.arange(1, n + 1, dtype=np.uint64), block, (0, 0, 0), block.shape)
    out["block_stats_ours_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cc3d.statistics(lab)
    out["block_stats_cc3d_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ndi.center_of_mass(fg, ref, np.arange(1, n + 1))
    out["block_stats_scipy_com_s"] = time.perf_counter() - t
    out["block_clusters"] = float(n)
    return out


def run(quick: bool = False) -> dict[str, float]:
    from distributed import Client, LocalCluster

    threshold = 0.5
    shape = (128, 128, 128) if quick else (512, 512, 512)
    n_main, n_big = (500, 4000) if quick else (20_000, 200_000)
    chunk = 64 if quick else 128
    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_pick_"))
    try:
        vol, _ = synthetic_map(shape, n_main, spacing=16, seed=1)
        base_s, n_ref = _scipy_baseline(vol, threshold)
        _write_zarr(vol, tmp / "map.zarr", chunk)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster):
            _warm_up(tmp / "map.zarr", chunk, threshold)
            ours_s, res = _pick_zarr(tmp / "map.zarr", chunk, threshold)
        out.update(clusters=float(n_ref), picked=float(len(res.table)), scipy_label_com_s=base_s, pick_2workers_s=ours_s,
                   ratio_pick_vs_scipy=ours_s / base_s, same_count_as_scipy=float(len(res.table) == n_ref))
        lib = _library_choices(vol[: shape[0] // 2, : shape[1] // 2, : shape[2] // 2], threshold)
        out.update(lib)
        del vol, res

        big, _ = synthetic_map(shape, n_big, spacing=8 if not quick else 6, seed=2)
        _write_zarr(big, tmp / "big.zarr", chunk)
        del big
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            _warm_up(tmp / "map.zarr", chunk, threshold)
            with _RssSampler(client) as rss:
                big_s, res = _pick_zarr(tmp / "big.zarr", chunk, threshold)
            out.update(big_clusters=float(len(res.table)), big_pick_s=big_s, big_worker_peak_rss_mb=rss.peak_each,
                       big_workers_total_peak_rss_mb=rss.peak_sum)
        # this process also generated the maps and ran the scipy baseline in memory
        out["client_peak_rss_mb_incl_generation"] = _maxrss_mb()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small volumes (seconds)")
    figures = run(quick=ap.parse_args().quick)
    for k, v in figures.items():
        print(f"{k:32s} {v:.4g}")
