"""Inference speed: our blockwise engine vs DeePiCt's own tiling, the compute floor and the machine.

Run ``python benchmarks/bench_predict.py [--quick]``. Uses DeePiCt's ribosome network (3D U-Net,
depth 2, 4 initial filters, batch norm) with random weights: speed does not depend on the weights.
Prints one ``name: value`` line per figure; ``run(quick)`` returns them as a flat dict.

Figures
- ``deepict_*``: DeePiCt's scheme, 64^3 boxes with 12 voxels cropped per side (40^3 kept), one box
  per forward pass; ``ours_*``: the best configuration found by the sweep; ``speedup_vs_deepict``:
  useful (kept) output voxels per second, ours / DeePiCt's, same net, same threads, same tomogram;
  ``prob_diff_*``: mean / max absolute difference of the two probability maps.
- ``sweep_*``: useful voxels/s of each lever (window, batch, batch-norm folding, channels_last_3d,
  bf16 autocast with its max probability change, torch.compile) on a tight loop.
- ``gflops_achieved`` vs ``sgemm_gflops``: convolution FLOPs per voxel x raw voxels per second,
  next to a float32 matrix multiply measured in the same run with the same threads.
- ``e2e_over_floor``: wall time of the whole predict (Dask, reading an MRC, writing OME-Zarr) over
  the compute floor (same windows through the same net in one loop, no Dask, no I/O).
- ``speedup_2_workers``: 2 single-threaded workers vs 1.
- ``peak_rss_mb_*``: peak resident memory of a worker at two tomogram sizes.
- ``published_*``: DeepFinder's published time (20 min per 512x512x200 on an M40 GPU) against our
  projected time for the same voxel count on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepict_dask.inference.engine import Predictor, predict_whole  # noqa: E402
from deepict_dask.inference.predict import PredictOptions, make_ref, predict_file  # noqa: E402
from deepict_dask.inference.predict3d import grids_3d  # noqa: E402
from deepict_dask.models import ModelInfo, build_network, flops_per_voxel, save_model  # noqa: E402

THREADS = 2


def ribosome_net(seed: int = 0) -> tuple[torch.nn.Module, ModelInfo]:
    torch.manual_seed(seed)
    info = ModelInfo(name="ribosome", dim=3, classes=["ribosome"], architecture={"preset": "deepict_ribosome"},
                     patch_size=[64, 64, 64], voxel_size=10.0)
    net = build_network(info).eval()
    for m in net.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return net, info


def tomogram(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth random density with blobs, z-scored (what the engine feeds the net)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    v = gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.5)
    return (v - v.mean()) / v.std()


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def sgemm_gflops(n: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t, _ = timed(lambda: [torch.mm(a, b) for _ in range(reps)], 2)
    return 2 * n**3 * reps / t / 1e9


def useful_rate(vol: np.ndarray, net, info, *, window: int, margin: int, batch: int, repeat: int = 1, **kw):
    pred = Predictor(net, info, batch_size=batch, threads=THREADS, **kw)
    grids = grids_3d(vol.shape, window, margin, "crop")
    pred.forward(np.zeros((1, window, window, window), np.float32))  # warm-up (allocations, compile)
    t, out = timed(lambda: predict_whole(vol, grids, pred), repeat)
    raw = np.prod([g.n_windows * g.window for g in grids])
    return vol.size / t, raw / t, out, t


def write_mrc(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """A random tomogram written slab by slab (never whole in memory)."""
    rng = np.random.default_rng(seed)
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as m:
        for z in range(0, shape[0], 16):
            m.data[z : z + 16] = rng.normal(size=(min(16, shape[0] - z),) + shape[1:]).astype(np.float32)
        m.voxel_size = 10.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def local_client(workers: int, threads: int):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=":0",
                      memory_limit="6GiB") as cluster, Client(cluster) as client:
        yield client


def run(quick: bool) -> dict:
    torch.set_num_threads(THREADS)
    res: dict[str, float | str] = {}
    net, info = ribosome_net()
    shape = (48, 80, 80) if quick else (96, 192, 192)
    vol = tomogram(shape)
    res["tomogram_shape"] = "x".join(map(str, shape))
    res["threads"] = THREADS

    # DeePiCt's own scheme: 64^3 boxes, 12 cropped per side, one box at a time, BN unfolded
    d_useful, d_raw, d_out, _ = useful_rate(vol, net, info, window=64, margin=12, batch=1, fold_bn=False)
    res["deepict_useful_mvox_s"] = d_useful / 1e6
    res["deepict_raw_mvox_s"] = d_raw / 1e6

    # sweep of the levers on a tight loop (a sub-volume keeps it short)
    sub = vol[:, : shape[1] // 2 + 32, : shape[2] // 2 + 32] if not quick else vol
    sweep = {}
    windows = (64, 128) if quick else (64, 96, 128, 160)
    for w in windows:
        for b in (1, 2):
            sweep[f"w{w}_b{b}"] = useful_rate(sub, net, info, window=w, margin=12, batch=b)[0]
    best = max(sweep, key=sweep.get)
    bw, bb = int(best.split("_")[0][1:]), int(best.split("_")[1][1:])
    sweep[f"w{bw}_b{bb}_nofold"] = useful_rate(sub, net, info, window=bw, margin=12, batch=bb, fold_bn=False)[0]
    sweep[f"w{bw}_b{bb}_channels_last"] = useful_rate(sub, net, info, window=bw, margin=12, batch=bb,
                                                      channels_last=True)[0]
    r_bf16, _, out_bf16, _ = useful_rate(sub, net, info, window=bw, margin=12, batch=bb, precision="bf16")
    _, _, out_fp32, _ = useful_rate(sub, net, info, window=bw, margin=12, batch=bb)
    sweep[f"w{bw}_b{bb}_bf16"] = r_bf16
    res["bf16_max_prob_change"] = float(np.abs(out_bf16 - out_fp32).max())
    if not quick and shutil.which("g++"):
        try:
            sweep[f"w{bw}_b{bb}_compile"] = useful_rate(sub, net, info, window=bw, margin=12, batch=bb,
                                                        compile=True)[0]
        except Exception as exc:  # inductor needs a working C++ toolchain
            res["compile_error"] = type(exc).__name__
    for k, v in sweep.items():
        res[f"sweep_{k}_mvox_s"] = v / 1e6
    res["best_config"] = best

    # ours (best config) vs DeePiCt on the whole tomogram
    o_useful, o_raw, o_out, floor_t = useful_rate(vol, net, info, window=bw, margin=12, batch=bb)
    res["ours_useful_mvox_s"] = o_useful / 1e6
    res["speedup_vs_deepict"] = o_useful / d_useful
    diff = np.abs(o_out - d_out)
    res["prob_diff_mean"] = float(diff.mean())
    res["prob_diff_max"] = float(diff.max())
    picks_a, picks_b = o_out[0] > 0.5, d_out[0] > 0.5
    inter = float((picks_a & picks_b).sum())
    res["mask_f1_at_0.5"] = 2 * inter / max(float(picks_a.sum() + picks_b.sum()), 1.0)

    # FLOP rate vs the machine
    fpv = flops_per_voxel(build_network(info), 1, (64, 64, 64))
    res["flops_per_voxel"] = fpv
    res["gflops_achieved"] = fpv * o_raw / 1e9
    res["sgemm_gflops"] = sgemm_gflops()
    res["flop_efficiency"] = res["gflops_achieved"] / res["sgemm_gflops"]

    # end to end through Dask vs the compute floor, scaling, memory
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        model = save_model(tmp / "ribosome.safetensors", *ribosome_net())
        e2e_shape = shape
        write_mrc(tmp / "t.mrc", e2e_shape)
        opts = PredictOptions(window=bw, margin=12, batch_size=bb, chunk=bw * 2, levels=1)
        ref = make_ref(model, opts)
        real = tomogram(e2e_shape, seed=1)
        floor_t, _ = timed(lambda: predict_whole(real, grids_3d(e2e_shape, bw, 12, "crop"),
                                                 Predictor(net, info, batch_size=bb, threads=THREADS)))
        timings = {}
        for workers, threads in ((1, THREADS), (1, 1), (2, 1)):
            with local_client(workers, threads) as client:
                client.run(lambda: None)
                dest = tmp / f"o{workers}{threads}"
                t, _ = timed(lambda d=dest: predict_file(tmp / "t.mrc", ref, d, opts, overwrite=True))
                timings[(workers, threads)] = t
        res["compute_floor_s"] = floor_t
        res["e2e_s"] = timings[(1, THREADS)]
        res["e2e_over_floor"] = timings[(1, THREADS)] / floor_t
        res["speedup_2_workers"] = timings[(1, 1)] / timings[(2, 1)]
        sizes = ((48, 64, 64), (96, 128, 128)) if quick else ((64, 128, 128), (128, 384, 384))
        for i, s in enumerate(sizes):
            write_mrc(tmp / f"m{i}.mrc", s, seed=i)
            with local_client(1, 1) as client:
                predict_file(tmp / f"m{i}.mrc", ref, tmp / f"mo{i}", PredictOptions(
                    window=bw, margin=12, batch_size=bb, chunk=128, levels=1), overwrite=True)
                rss = max(client.run(_peak_rss_mb).values())
            res[f"peak_rss_mb_{'x'.join(map(str, s))}"] = rss
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # published numbers on the same voxel count
    df_voxels, df_seconds = 512 * 512 * 200, 20 * 60
    res["published_deepfinder_m40_mvox_s"] = df_voxels / df_seconds / 1e6
    res["ours_projected_s_for_512x512x200"] = df_voxels / o_useful
    res["deepict_scheme_projected_s_for_512x512x200"] = df_voxels / d_useful
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volumes, fewer configurations")
    args = parser.parse_args()
    t = time.perf_counter()
    for k, v in run(args.quick).items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    print(f"bench_wall_s: {time.perf_counter() - t:.1f}")
    os._exit(0)


if __name__ == "__main__":
    main()
