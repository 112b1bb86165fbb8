"""Training throughput on CPU, how long the model waits for data, and bf16 vs fp32 CPU inference.

    python benchmarks/bench_train.py [--quick]

1. Trains the demo3d architecture (UNet3D depth 2, 6 filters, 40^3 patches, batch 2) on a
   synthetic tomogram stored as MRC for a fixed number of steps with the threaded prefetching
   loader, and reports voxels/s and the fraction of wall time the model waited for data. Baseline:
   the same batches produced inline (no loader threads): its wait fraction is batch time /
   (batch time + step time).
2. Inference with bf16 autocast on CPU (AMX-BF16 where the CPU has it) vs fp32 on one 64^3 (quick)
   or 96^3 tile of the shipped demo3d model: time ratio and the largest probability difference.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

import deepict_dask  # noqa: F401  (before torch: huge pages for torch's allocator, as in production)

# isort: split
import torch


def _data(tmp: Path, shape=(64, 96, 96)) -> dict:
    rng = np.random.default_rng(0)
    z, y, x = np.indices(shape)
    img = rng.normal(0, 1, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    for _ in range(30):
        c = rng.integers(6, np.array(shape) - 6)
        m = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 25
        img[m] += 1.5
        lab[m] = 1
    paths = {}
    for name, arr in (("tomo", img), ("lab", lab)):
        paths[name] = str(tmp / f"{name}.mrc")
        with mrcfile.new(paths[name], overwrite=True) as m:
            m.set_data(arr)
            m.voxel_size = 13.48
    return paths


def _training(quick: bool) -> dict:
    from deepict_dask.train import parse_config, train
    from deepict_dask.train.data import PatchSampler, build_dataset
    from deepict_dask.train.losses import SegmentationLoss

    steps = 20 if quick else 60
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        p = _data(tmp)
        entry = {"tomogram": p["tomo"], "labels": {"ribosome": p["lab"]}}
        cfg = parse_config({
            "name": "bench", "classes": ["ribosome"],
            "model": {"kind": "UNet3D", "depth": 2, "initial_filters": 6},
            "data": {"train": [entry], "patch_size": [40, 40, 40], "batch_size": 2, "workers": 1, "prefetch": 4,
                     "validation_fraction": 0.5},
            "training": {"steps": steps, "validate_every": 10**6, "early_stopping": None},
            "output": {"dir": str(tmp / "run")},
        })
        t0 = time.perf_counter()
        res = train(cfg, progress=False)
        wall = time.perf_counter() - t0
        # baseline: batches made inline, timed separately from the optimizer step
        ds = build_dataset(cfg)
        sampler = PatchSampler(ds.train, [40, 40, 40], 3, 0.5)
        from deepict_dask.models import UNet3D

        net = UNet3D(out_channels=1, depth=2, initial_filters=6)
        opt = torch.optim.Adam(net.parameters())
        loss_fn = SegmentationLoss(cfg.loss, "sigmoid")
        t_batch = t_step = 0.0
        for k in range(max(5, steps // 4)):
            a = time.perf_counter()
            x, y = sampler.batch(np.random.default_rng(k), 2, cfg.augment)
            b = time.perf_counter()
            opt.zero_grad()
            loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            opt.step()
            t_batch += b - a
            t_step += time.perf_counter() - b
    return {
        "train_steps": steps,
        "train_voxels_per_s": round(res.voxels_per_second, 1),
        "train_voxels_per_s_steady": round(res.steady_voxels_per_second, 1),
        "train_wall_s_incl_setup": round(wall, 1),
        "data_wait_fraction_prefetch": round(res.data_wait_fraction, 4),
        "data_wait_fraction_inline_baseline": round(t_batch / (t_batch + t_step), 4),
        "torch_threads": torch.get_num_threads(),
    }


def _bf16(quick: bool) -> dict:
    from deepict_dask.models import demo_model_path, load_model

    try:
        module, info = load_model(demo_model_path("demo3d"))
        which = "demo3d"
    except Exception:
        from deepict_dask.models import ModelInfo, build_network

        info = ModelInfo(name="b", dim=3, classes=["a"], architecture={"kind": "UNet3D", "depth": 2,
                         "initial_filters": 6}, patch_size=[40, 40, 40], voxel_size=10)
        from deepict_dask.models.unet import ProbabilityHead

        module, which = ProbabilityHead(build_network(info).eval(), "sigmoid").eval(), "untrained"
    n = 64 if quick else 96
    x = torch.randn(1, 1, n, n, n)
    reps = 2 if quick else 4

    def timed(bf16: bool) -> tuple[float, torch.Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            module(x)  # warm-up
            t = time.perf_counter()
            for _ in range(reps):
                out = module(x)
        return (time.perf_counter() - t) / reps, out.float()

    t32, p32 = timed(False)
    t16, p16 = timed(True)
    return {
        "bf16_model": which,
        "bf16_tile": n,
        "fp32_s_per_tile": round(t32, 4),
        "bf16_s_per_tile": round(t16, 4),
        "bf16_speedup_vs_fp32": round(t32 / t16, 3),
        "bf16_max_prob_diff": round(float((p32 - p16).abs().max()), 4),
        "bf16_mean_prob_diff": round(float((p32 - p16).abs().mean()), 5),
    }


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    out = _training(quick)
    out.update(_bf16(quick))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, smaller tile")
    for k, v in run(ap.parse_args().quick).items():
        print(f"{k}: {v}")
