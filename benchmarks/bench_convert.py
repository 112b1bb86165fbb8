"""Memory of MRC -> OME-Zarr conversion stays flat as the tomogram grows.

Generates two float32 MRC tomograms chunk by chunk (a small one and one 8x larger), converts each
with ``write_ome_zarr`` on a LocalCluster of 2 worker processes with a small memory limit, and samples
the peak RSS of the whole process tree (this process, the nannies and the workers). The baseline does
the same work the simple way (``mrcfile.read`` + numpy downsampling + ``zarr`` writes) on the large
tomogram in a separate process. Everything is written to a temporary directory that is removed.

    python benchmarks/bench_convert.py [--quick] [--shape Z Y X] [--chunks 128]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DEFAULT_SHAPE = (512, 1024, 1024)  # 1024 x 1024 x 512 (x, y, z): 2 GiB of float32
QUICK_SHAPE = (256, 512, 512)  # 256 MiB
WORKER_MEMORY = "700MiB"

BASELINE = r"""
import sys, numpy as np, mrcfile, zarr
from numcodecs import Blosc
src, out, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = mrcfile.read(src)
g = zarr.open_group(out, mode="w", zarr_format=2)
comp = Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)
for k in range(3):
    g.create_array(str(k), shape=data.shape, chunks=(chunk,) * 3, dtype=data.dtype, compressors=comp)[:] = data
    z, y, x = (n // 2 * 2 for n in data.shape)
    data = data[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5)).astype(np.float32)
"""


def make_mrc(path: Path, shape: tuple[int, int, int], slab: int = 16) -> None:
    """A noisy tomogram with some structure, written slab by slab (never whole in memory)."""
    import mrcfile

    from deepict_dask.io.mrc import MrcBlockWriter

    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as m:
        m.voxel_size = 7.84
        offset, dtype = int(m.data.offset), m.data.dtype
    writer = MrcBlockWriter(str(path), shape, dtype, offset)
    rng = np.random.default_rng(0)
    ramp = np.sin(np.arange(shape[2], dtype=np.float32) / 17.0)
    for z in range(0, shape[0], slab):
        n = min(slab, shape[0] - z)
        writer[z : z + n] = rng.standard_normal((n,) + shape[1:], dtype=np.float32) + ramp


def _managed_bytes(dask_worker) -> int:
    """Bytes of task results a worker holds (what Dask manages, as opposed to process RSS)."""
    from dask.sizeof import sizeof

    return sum(sizeof(v) for v in list(dask_worker.data.values()))


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants every ``interval`` seconds,
    and (given a client) the largest amount of task data any one worker holds."""

    def __init__(self, client=None, interval: float = 0.05):
        import psutil

        self.proc = psutil.Process()
        self.client = client
        self.interval = interval
        self.peak = 0
        self.managed_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc] + self.proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        last_managed = 0.0
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            if self.client is not None and time.monotonic() - last_managed > 0.25:
                last_managed = time.monotonic()
                per_worker = self.client.run(_managed_bytes).values()
                self.managed_peak = max([self.managed_peak, *per_worker])
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


def convert(client, src: Path, out: Path, chunks: int) -> tuple[int, int, float, int]:
    """(tree RSS before, peak tree RSS, seconds, peak task data on one worker) for one conversion."""
    from deepict_dask.io import open_volume, write_ome_zarr

    client.run(lambda: __import__("gc").collect())
    with PeakRSS(client) as rss:
        before = rss.sample()
        t0 = time.perf_counter()
        write_ome_zarr(open_volume(src, chunks=chunks), out, chunks=chunks, levels=3)
        seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return before, rss.peak, seconds, rss.managed_peak


def baseline(src: Path, out: Path, chunks: int) -> tuple[int, float]:
    """Peak RSS (bytes) and seconds of the load-everything approach, in a fresh process."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BASELINE, str(src), str(out), str(chunks)], check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, seconds


def run(quick: bool, shape: tuple[int, int, int] | None = None, chunks: int = 128) -> dict:
    from distributed import Client, LocalCluster

    big = tuple(shape or (QUICK_SHAPE if quick else DEFAULT_SHAPE))
    small = tuple(max(1, n // 2) for n in big)  # 8x fewer voxels
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        make_mrc(tmp / "small.mrc", small)
        make_mrc(tmp / "big.mrc", big)
        base_peak, base_s = baseline(tmp / "big.mrc", tmp / "base.zarr", chunks)
        with LocalCluster(n_workers=2, threads_per_worker=2, memory_limit=WORKER_MEMORY, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            convert(client, tmp / "small.mrc", tmp / "warm.ome.zarr", chunks)  # warm up imports
            s_before, s_peak, s_sec, _ = convert(client, tmp / "small.mrc", tmp / "small.ome.zarr", chunks)
            b_before, b_peak, b_sec, b_managed = convert(client, tmp / "big.mrc", tmp / "big.ome.zarr", chunks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    itemsize = 4
    tomo_bytes = int(np.prod(big)) * itemsize
    chunk_bytes = chunks**3 * itemsize
    return {
        "shape_zyx": "x".join(map(str, big)),
        "tomogram_MiB": tomo_bytes / 2**20,
        "chunk_MiB": chunk_bytes / 2**20,
        "tomogram_over_chunk": tomo_bytes / chunk_bytes,
        "peak_rss_MiB": b_peak / 2**20,
        "rss_before_MiB": b_before / 2**20,
        "peak_rss_over_tomogram": b_peak / tomo_bytes,
        "peak_rss_over_chunk": b_peak / chunk_bytes,
        "added_rss_over_chunk": (b_peak - b_before) / chunk_bytes,
        "worker_task_data_peak_over_chunk": b_managed / chunk_bytes,
        "small_peak_rss_MiB": s_peak / 2**20,
        "small_added_rss_over_chunk": (s_peak - s_before) / chunk_bytes,
        "peak_growth_for_8x_volume": b_peak / s_peak,
        "convert_seconds": b_sec,
        "convert_MB_per_s": tomo_bytes / b_sec / 1e6,
        "baseline_peak_rss_MiB": base_peak / 2**20,
        "baseline_peak_rss_over_tomogram": base_peak / tomo_bytes,
        "baseline_seconds": base_s,
        "peak_rss_project_over_baseline": b_peak / base_peak,
        "seconds_project_over_baseline": b_sec / base_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{'x'.join(map(str, QUICK_SHAPE))} (ZYX) instead of "
                    f"{'x'.join(map(str, DEFAULT_SHAPE))}")
    ap.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="larger tomogram shape (ZYX)")
    ap.add_argument("--chunks", type=int, default=128, help="chunk edge in voxels (default 128)")
    args = ap.parse_args()
    figures = run(args.quick, tuple(args.shape) if args.shape else None, args.chunks)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
