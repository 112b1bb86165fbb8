"""Benchmark: time and peak memory of `simulate_tomogram` + writing, small (in memory) and large (blockwise).

Baseline for the large case is the naive approach's memory: the five output volumes held in RAM at
once (float32 tomogram + uint8/uint32 truth), which the blockwise path avoids.

    python benchmarks/bench_simulate.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time
import dask
from deepict_dask.simulate import simulate_tomogram, write_simulation
shape = tuple(int(v) for v in sys.argv[1].split("x")); blockwise = sys.argv[2] == "1"
dask.config.set(scheduler="threads", num_workers=2)
t0 = time.perf_counter()
sim = simulate_tomogram(shape, 13.48, seed=0, preset="cell", blockwise=blockwise)
t1 = time.perf_counter()
with tempfile.TemporaryDirectory() as d:
    write_simulation(sim, d, "bench")
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"simulate_s": t1 - t0, "write_s": t2 - t1, "peak_mib": peak, "n_particles": len(sim.table)}))
"""


def _measure(shape, blockwise: bool) -> dict:
    """Run in a fresh process so that the peak RSS belongs to this case alone."""
    out = subprocess.run([sys.executable, "-c", CHILD, "x".join(map(str, shape)), "1" if blockwise else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    small = (128, 256, 256)
    large = (256, 512, 512) if quick else (512, 1024, 1024)
    res: dict = {}
    for tag, shape, bw in (("small", small, False), ("large", large, True)):
        m = _measure(shape, bw)
        vox = shape[0] * shape[1] * shape[2]
        res[f"{tag}_shape"] = "x".join(map(str, shape))
        res[f"{tag}_simulate_s"] = round(m["simulate_s"], 2)
        res[f"{tag}_write_s"] = round(m["write_s"], 2)
        res[f"{tag}_total_s"] = round(m["simulate_s"] + m["write_s"], 2)
        res[f"{tag}_peak_mib"] = round(m["peak_mib"], 1)
        res[f"{tag}_particles"] = m["n_particles"]
        res[f"{tag}_mvoxel_per_s"] = round(vox / 1e6 / (m["simulate_s"] + m["write_s"]), 2)
        res[f"{tag}_in_memory_outputs_mib"] = round(vox * (4 + 1 + 4 + 1 + 1) / 2**20, 1)
    res["large_peak_vs_in_memory_outputs"] = round(res["large_peak_mib"] / res["large_in_memory_outputs_mib"], 3)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="large case 256x512x512 instead of 512x1024x1024")
    a = ap.parse_args()
    print(json.dumps(run(a.quick), indent=2))
