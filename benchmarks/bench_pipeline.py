"""Workflow scaling and resume cost: ``deepict run`` on many small tomograms.

Generates N small tomograms (noise MRCs; the work per voxel does not depend on the content) and two
models with the published DeePiCt architectures (3D ribosome network: depth 2, 4 filters, batch
norm; 2D compartment network) with random weights, then runs the same workflow (convert, normalize,
2D + 3D prediction, segmentation masks, particle picking with a context rule, tables, summary) three times:

1. on a LocalCluster with 1 single-threaded worker process,
2. on a LocalCluster with 2 single-threaded worker processes (fresh run directory),
3. again on run 2's directory after it finished (everything is up to date).

Printed: throughput ratio 2 workers / 1 worker (target >= 1.7) and re-run time / first run time
(target < 0.05). Cluster start-up is outside the timed region for both; the re-run is timed the way a
user runs it (``run_workflow`` from the configuration, which needs no cluster when nothing is left).

    python benchmarks/bench_pipeline.py [--quick] [--n 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_FULL, SHAPE_FULL = 20, (48, 96, 96)
N_QUICK, SHAPE_QUICK = 6, (32, 64, 64)

CONFIG = """\
inputs: {{paths: ["{data}/*.mrc"]}}
output: {{dir: "{out}", chunks: 64, levels: 2, report: false}}
preprocess: {{normalize: true, filter: {{enabled: false}}}}
models:
  - {{name: m2, path: "{models}/bench2d.safetensors", predict: {{margin: 8}}}}
  - {{name: m3, path: "{models}/bench3d.safetensors", predict: {{window: 48, margin: 6}}}}
targets:
  - {{name: cytosol, model: m2, kind: segmentation}}
  - {{name: membrane, model: m3, kind: segmentation}}
{particles}
"""
PARTICLES = """\
  - {name: ribosome, model: m3, pick: {threshold: 0.5, min_size: 2, context: {target: cytosol, mode: contact}}}
"""


def make_inputs(root: Path, n: int, shape: tuple[int, int, int]) -> None:
    import mrcfile
    import torch

    from deepict_dask.models import ModelInfo, architecture_from, build_network, save_model

    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        with mrcfile.new(root / "data" / f"tomo_{i:03d}.mrc") as m:
            m.set_data(rng.normal(size=shape).astype(np.float32))
            m.voxel_size = 13.48
    torch.manual_seed(0)
    i3 = ModelInfo(name="bench3d", dim=3, classes=["ribosome", "membrane"], patch_size=[64, 64, 64],
                   architecture=architecture_from("deepict_ribosome"), voxel_size=13.48)
    i2 = ModelInfo(name="bench2d", dim=2, classes=["cytosol"], patch_size=[64, 64],
                   architecture={"kind": "UNet2D", "depth": 2, "initial_filters": 8, "batch_norm": True},
                   voxel_size=13.48)
    save_model(root / "bench3d.safetensors", build_network(i3), i3)
    save_model(root / "bench2d.safetensors", build_network(i2), i2)


def _config(root: Path, out: str):
    from deepict_dask.pipeline.config import parse_config

    text = CONFIG.format(data=root / "data", out=root / out, models=root,
                         particles=PARTICLES)
    return parse_config(text, "bench.yaml")


def busy_seconds(run_dir: Path) -> float:
    """Sum of the stage times recorded in the manifests (work the workers did)."""
    total = 0.0
    for f in (run_dir / "manifest").glob("*.json"):
        if not f.name.startswith("."):
            total += sum(s["seconds"] for s in json.loads(f.read_text())["stages"].values())
    return total


def _warm_up() -> None:
    import importlib

    for module in ("torch", "deepict_dask.inference.predict", "deepict_dask.pick.api", "deepict_dask.preprocess",
                   "deepict_dask.io", "deepict_dask.pipeline.stages"):
        importlib.import_module(module)


def timed_run(root: Path, out: str, workers: int | None) -> tuple[float, int]:
    """Seconds of ``run_workflow`` (cluster start-up excluded), and tomograms failed."""
    from distributed import Client, LocalCluster

    from deepict_dask.pipeline.run import run_workflow

    config = _config(root, out)
    if workers is None:
        t0 = time.perf_counter()
        result = run_workflow(config)
        return time.perf_counter() - t0, len(result.failed)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(_warm_up)  # a long run pays the imports once per worker; keep them out of the timing
        t0 = time.perf_counter()
        result = run_workflow(config, client=client)
        return time.perf_counter() - t0, len(result.failed)


def run(quick: bool = False, n: int | None = None) -> dict:
    n = n or (N_QUICK if quick else N_FULL)
    shape = SHAPE_QUICK if quick else SHAPE_FULL
    root = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        make_inputs(root, n, shape)
        t1, f1 = timed_run(root, "run1", 1)
        t2, f2 = timed_run(root, "run2", 2)
        t_again, f3 = timed_run(root, "run2", None)
        return {
            "pipeline_tomograms": n,
            "pipeline_shape": "x".join(map(str, shape)),
            "pipeline_1worker_s": round(t1, 2),
            "pipeline_2workers_s": round(t2, 2),
            "pipeline_scaling_2v1": round(t1 / t2, 3),
            # share of worker time spent inside stages: what the orchestration controls (the rest of a
            # shortfall from 2x is CPU contention on a shared machine)
            "pipeline_2workers_busy_fraction": round(busy_seconds(root / "run2") / (2 * t2), 3),
            "pipeline_rerun_s": round(t_again, 3),
            "pipeline_rerun_fraction": round(t_again / t2, 4),
            "pipeline_failed": f1 + f2 + f3,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{N_QUICK} tomograms of {SHAPE_QUICK} instead of {N_FULL}")
    p.add_argument("--n", type=int, help="number of tomograms")
    args = p.parse_args(argv)
    res = run(args.quick, args.n)
    print(json.dumps(res, indent=2))
    print(f"2 workers vs 1: {res['pipeline_scaling_2v1']:.2f}x throughput (target >= 1.7); "
          f"re-run after completion: {100 * res['pipeline_rerun_fraction']:.1f} % of the first run (target < 5 %)")


if __name__ == "__main__":
    sys.exit(main())
