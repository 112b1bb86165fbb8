"""Inference on a CUDA GPU: the engine against DeePiCt's tiling, the GPU's own floor, and end to end.

Run ``python benchmarks/bench_predict_gpu.py [--quick]`` on a machine with a CUDA GPU
(``--device cpu`` runs the same script on the CPU, to check it, with figures that mean nothing for
a GPU). Same network as ``bench_predict.py`` (DeePiCt's ribosome U-Net, random weights). Prints one
``name: value`` line per figure.

Figures
- ``deepict_*``: DeePiCt's scheme on the GPU, 64^3 boxes, 12 voxels cropped per side, one box per
  forward pass, fp32, batch norm unfolded. ``sweep_w*_<precision>``: useful (kept) voxels/s of the
  engine (whole-volume sliding window, windows cut and blended on the GPU) per window edge and
  precision, at the automatic batch size. ``speedup_vs_deepict``: best of the sweep / DeePiCt.
- ``batch_w*_<precision>_b*``: the bare forward pass per batch size (raw voxels/s, peak GPU memory).
- ``host_path_*``: the same windows when each batch is copied to the GPU and its probabilities back
  to the host (how the engine worked before blocks were kept on the device).
- ``fp16_prob_diff_*`` / ``fp16_mask_f1``: fp16 autocast (the GPU default) against fp32.
- ``oom_*``: a batch that does not fit (GPU memory capped with
  ``torch.cuda.set_per_process_memory_fraction``) is halved until it does; the output must equal
  that of a batch that fits. ``oom_host_blend_*``: memory capped below the e2e volume itself, so
  the engine blends on the host and sends windows over batch by batch.
- ``floor_s``: the e2e tomogram's windows through the network in one loop on the GPU (input already
  there, no blending, no host copies): the compute floor. ``whole_s``: the engine's sliding window
  over the in-memory volume (blending included, no Dask, no I/O). ``e2e_s``: ``predict_file`` on a
  local Dask cluster with one GPU worker (``resources={"GPU": 1}``), MRC in, uint8 OME-Zarr out,
  best of 2 after a first run; ``gpu_util_mean``: the GPU's busy share during those runs (NVML).
- ``big_*``: the same end to end at 512x1024x1024 (``--quick``: smaller).
- ``projected_s_512x512x200``: our end-to-end time for DeepFinder's published tomogram size
  (published: 20 min on an M40).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import deepict_dask  # noqa: E402,F401

# isort: split
import torch  # noqa: E402

from benchmarks.bench_predict import ribosome_net, tomogram, write_mrc  # noqa: E402
from deepict_dask.inference.blockwise import Predictor, predict_whole  # noqa: E402
from deepict_dask.inference.predict import DEFAULT_WINDOW_3D, PredictOptions, make_ref, predict_file  # noqa: E402
from deepict_dask.inference.predict3d import DEFAULT_MARGIN_3D, grids_3d  # noqa: E402
from deepict_dask.inference.windows import block_windows, window_starts  # noqa: E402
from deepict_dask.models import save_model  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int = 2) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def useful_rate(vol, net, info, device, *, window, margin=DEFAULT_MARGIN_3D, **kw):
    pred = Predictor(net, info, device, **kw)
    grids = grids_3d(vol.shape, window, margin, "crop")
    warm(vol, pred, window, margin)
    t, out = timed(lambda: predict_whole(vol, grids, pred), device)
    pred.raw_rate = np.prod([g.n_windows * g.window for g in grids]) / t  # every voxel computed, kept or not
    return vol.size / t, out, pred


def warm(vol: np.ndarray, pred: Predictor, window: int, margin: int = DEFAULT_MARGIN_3D) -> None:
    """One small prediction first: CUDA context, cuDNN algorithm choice, allocator."""
    sub = vol[:window, :window, :window]
    predict_whole(sub, grids_3d(sub.shape, window, margin, "crop"), pred)


def host_path_s(vol, pred: Predictor, window: int) -> float:
    """The engine's old way: per batch, windows stacked on the host, probabilities copied back and
    blended there (here only copied back: the blending is left out, so this is a lower bound)."""
    grids = grids_3d(vol.shape, window, DEFAULT_MARGIN_3D, "crop")
    bounds = tuple((0, n) for n in vol.shape)
    starts = window_starts(grids, block_windows(grids, bounds))
    padded = np.pad(vol, [(window, window)] * 3, mode="reflect")
    b = pred.runner((window,) * 3).batch_size

    def go():
        for i in range(0, len(starts), b):
            batch = np.stack([padded[tuple(slice(s + window, s + 2 * window) for s in st)]
                              for st in starts[i:i + b]])
            pred.forward(batch)
    return timed(go, pred.device)[0]


def floor_s(vol, pred: Predictor, window: int) -> float:
    """All windows of ``vol`` through the network, input already on the device, nothing else."""
    grids = grids_3d(vol.shape, window, DEFAULT_MARGIN_3D, "crop")
    n = int(np.prod([g.n_windows for g in grids]))
    b = min(pred.runner((window,) * 3).batch_size, n)
    x = torch.randn((b, window, window, window), device=pred.device)

    def go():
        done = 0
        while done < n:
            k = min(b, n - done)
            pred.forward_tensor(x[:k])
            done += k
    return timed(go, pred.device)[0]


class GpuSampler:
    """Mean GPU utilization (NVML) over a stretch of time; NaN when NVML is not there."""

    def __init__(self, period: float = 0.05):
        self.period, self.samples, self._stop = period, [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._h = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self._nvml = None

    def _loop(self):
        while not self._stop.wait(self.period):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu)

    @contextlib.contextmanager
    def sampling(self):
        if self._nvml is None:
            yield
            return
        self._stop.clear()
        t = threading.Thread(target=self._loop, daemon=True)
        t.start()
        try:
            yield
        finally:
            self._stop.set()
            t.join()

    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def _worker_gpu_peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


class Figures(dict):
    """The figures, each printed as soon as it is measured (a run cut short still reports)."""

    def __setitem__(self, key: str, value: object) -> None:
        super().__setitem__(key, value)
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", flush=True)


def batch_sweep(res: dict, net, info, device: str, window: int, batches=(1, 2, 4, 8, 16, 32),
                windows: int = 64) -> None:
    """Raw voxels/s of the bare forward pass per batch size: where the GPU stops gaining."""
    for prec in ("fp16", "fp32"):
        for b in batches:
            pred = Predictor(net, info, device, batch_size=b, precision=prec)
            x = torch.randn((b, window, window, window), device=device)
            pred.forward_tensor(x)
            n = max(2, windows // b)
            t, _ = timed(lambda p=pred, x=x, n=n: [p.forward_tensor(x) for _ in range(n)], device)
            res[f"batch_w{window}_{prec}_b{b}_raw_mvox_s"] = n * b * window**3 / t / 1e6
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
                pred.forward_tensor(x)
                res[f"batch_w{window}_{prec}_b{b}_gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            del pred, x


def precision_by_network(res: dict, device: str, window: int, batch: int = 4) -> None:
    """fp16 autocast vs fp32 on a wide network too (DeepFinder's 32-48-64 filters, 13 classes): the
    ribosome net has 4-16 filters and is bound by memory traffic, where fp16's casts do not pay."""
    from deepict_dask.models import ModelInfo, build_network

    info = ModelInfo(name="deepfinder", dim=3, classes=[f"c{i}" for i in range(12)], activation="softmax",
                     architecture={"preset": "deepfinder"}, patch_size=[56, 56, 56], voxel_size=10.0)
    torch.manual_seed(0)
    net = build_network(info).eval()
    x = torch.randn((batch, window, window, window), device=device)
    for prec in ("fp16", "fp32"):
        pred = Predictor(net, info, device, batch_size=batch, precision=prec)
        pred.forward_tensor(x)
        t, _ = timed(lambda p=pred: [p.forward_tensor(x) for _ in range(4)], device)
        res[f"deepfinder_w{window}_b{batch}_{prec}_raw_mvox_s"] = 4 * batch * window**3 / t / 1e6


def run(quick: bool, device: str | None = None, part: str = "all") -> dict:
    """The figures; ``device`` None: the GPU, or only a ``skipped`` line where there is none (as
    under ``python -m benchmarks`` on a CPU machine)."""
    from distributed import Client, LocalCluster

    from benchmarks.memory import peak_rss_mb

    res = Figures()
    if device is None:
        if not torch.cuda.is_available():
            res["skipped"] = "no CUDA GPU visible"
            return dict(res)
        device = "cuda"
    res["device"] = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    res["torch"] = torch.__version__
    net, info = ribosome_net()
    if part in ("all", "batch"):
        batch_sweep(res, net, info, device, DEFAULT_WINDOW_3D["cuda" if device.startswith("cuda") else "cpu"],
                    (1, 2) if quick else (1, 2, 4, 8, 16, 32), windows=4 if quick else 64)
        precision_by_network(res, device, 64 if quick else 128, 1 if quick else 4)
    if part == "batch":
        return dict(res)
    vol = tomogram((64, 128, 128) if quick else (128, 256, 256))
    res["sweep_shape"] = "x".join(map(str, vol.shape))

    d_rate, d_out, _ = useful_rate(vol, net, info, device, window=64, margin=12, batch_size=1, fold_bn=False,
                                   channels_last=False, precision="fp32")
    res["deepict_useful_mvox_s"] = d_rate / 1e6
    sweep, outs = {}, {}
    for w in ((64, 128) if quick else (64, 96, 128, 160, 192)):
        for prec in ("fp16", "fp32"):
            sweep[(w, prec)], outs[(w, prec)], p = useful_rate(vol, net, info, device, window=w, precision=prec)
            res[f"sweep_w{w}_{prec}_mvox_s"] = sweep[(w, prec)] / 1e6
            res[f"sweep_w{w}_{prec}_raw_mvox_s"] = p.raw_rate / 1e6
            res[f"sweep_w{w}_{prec}_batch"] = p.runner((w,) * 3).batch_size
    best = max(sweep, key=sweep.get)
    res["best_config"] = f"w{best[0]}_{best[1]}"
    res["speedup_vs_deepict"] = sweep[best] / d_rate
    diff = np.abs(outs[best] - d_out)
    res["prob_diff_vs_deepict_mean"], res["prob_diff_vs_deepict_max"] = float(diff.mean()), float(diff.max())
    w = DEFAULT_WINDOW_3D["cuda" if device.startswith("cuda") else "cpu"]
    w = w if (w, "fp16") in outs else 128
    a, b = outs[(w, "fp16")], outs[(w, "fp32")]
    res["fp16_prob_diff_mean"], res["fp16_prob_diff_max"] = float(np.abs(a - b).mean()), float(np.abs(a - b).max())
    ma, mb = a[0] > 0.5, b[0] > 0.5
    res["fp16_mask_f1"] = 2 * float((ma & mb).sum()) / max(float(ma.sum() + mb.sum()), 1.0)

    # the old host round trip per batch, same windows, same predictor
    pred = Predictor(net, info, device)
    res["host_path_s"] = host_path_s(vol, pred, w)
    res["device_path_s"] = vol.size / sweep[(w, "fp16")]
    res["device_over_host_speedup"] = res["host_path_s"] / res["device_path_s"]

    # out-of-memory recovery: cap the memory so that the automatic batch does not fit
    if device.startswith("cuda"):
        grids = grids_3d(vol.shape, w, DEFAULT_MARGIN_3D, "crop")
        n_win = int(np.prod([g.n_windows for g in grids]))
        ref_out = predict_whole(vol, grids, Predictor(net, info, device, batch_size=1))
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info()
        torch.cuda.set_per_process_memory_fraction(min(1.0, 1.5 * 2**30 / total))
        try:
            big = Predictor(net, info, device, batch_size=n_win)
            out = predict_whole(vol, grids, big)
            res["oom_batch_requested"], res["oom_batch_after"] = n_win, big.runner((w,) * 3).batch_size
            res["oom_output_max_diff"] = float(np.abs(out - ref_out).max())
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()

    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_gpu_"))
    sampler = GpuSampler()
    try:
        model = save_model(tmp / "ribosome.safetensors", *ribosome_net())
        shape = (64, 256, 256) if quick else (256, 512, 512)
        res["e2e_shape"] = "x".join(map(str, shape))
        write_mrc(tmp / "t.mrc", shape)
        real = tomogram(shape, seed=1)
        if device.startswith("cuda"):
            # so little GPU memory that the volume does not fit beside the network, a window does:
            # the block is blended on the host, its windows sent over batch by batch
            grids = grids_3d(shape, w, DEFAULT_MARGIN_3D, "crop")
            ref_out = predict_whole(real, grids, Predictor(net, info, device))
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(real.nbytes / torch.cuda.mem_get_info()[1])
            try:
                tight = Predictor(net, info, device, batch_size=8)
                out = predict_whole(real, grids, tight)
                res["oom_host_blend_batch_after"] = tight.runner((w,) * 3).batch_size
                res["oom_host_blend_output_max_diff"] = float(np.abs(out - ref_out).max())
            finally:
                torch.cuda.set_per_process_memory_fraction(1.0)
                torch.cuda.empty_cache()
            del ref_out
        pred = Predictor(net, info, device)
        res["floor_s"] = floor_s(real, pred, w)
        warm(real, pred, w)
        res["whole_s"] = timed(lambda: predict_whole(real, grids_3d(shape, w, DEFAULT_MARGIN_3D, "crop"), pred),
                               device)[0]
        big = (128, 512, 512) if quick else (512, 1024, 1024)
        res["big_shape"] = "x".join(map(str, big))
        write_mrc(tmp / "big.mrc", big, seed=3)
        cores = os.cpu_count() or 2
        # one GPU worker with many threads (GPU tasks pinned to it) against several processes that
        # share the GPU (the host-side reading, normalizing, quantizing and writing spread over them)
        layouts = [(1, min(8, cores), True), (4, max(1, cores // 4), True), (cores, 1, False)]
        if quick:
            layouts = layouts[:2]
        best = {}
        for workers, threads, pinned in layouts:
            tag = f"{workers}x{threads}{'_gpu' if pinned else ''}"
            resources = {"GPU": 1} if (pinned and device.startswith("cuda")) else None
            with LocalCluster(n_workers=workers, threads_per_worker=threads, resources=resources, processes=True,
                              dashboard_address=":0") as cluster, Client(cluster) as client:
                for chunk in (256, 512):
                    opts = PredictOptions(levels=1, chunk=chunk, device=device)
                    ref = make_ref(model, opts)
                    t = time.perf_counter()
                    predict_file(tmp / "t.mrc", ref, tmp / "o", opts, overwrite=True)
                    res[f"e2e_first_s_{tag}_chunk{chunk}"] = time.perf_counter() - t
                    sampler.samples = []
                    runs = []
                    with sampler.sampling():
                        for _ in range(2):
                            t = time.perf_counter()
                            predict_file(tmp / "t.mrc", ref, tmp / "o", opts, overwrite=True)
                            runs.append(time.perf_counter() - t)
                    res[f"e2e_s_{tag}_chunk{chunk}"] = min(runs)
                    res[f"gpu_util_{tag}_chunk{chunk}"] = sampler.mean()
                    best[(tag, chunk)] = min(runs)
                chunk = min((256, 512), key=lambda c: best[(tag, c)])
                opts = PredictOptions(levels=1, chunk=chunk, device=device)
                sampler.samples = []
                with sampler.sampling():
                    t = time.perf_counter()
                    predict_file(tmp / "big.mrc", make_ref(model, opts), tmp / "o", opts, overwrite=True)
                    res[f"big_e2e_s_{tag}"] = time.perf_counter() - t
                res[f"big_gpu_util_{tag}"] = sampler.mean()
                res[f"big_mvox_s_{tag}"] = np.prod(big) / res[f"big_e2e_s_{tag}"] / 1e6
                res[f"big_worker_peak_rss_mb_{tag}"] = max(client.run(peak_rss_mb).values())
                res[f"big_worker_gpu_peak_mb_{tag}"] = max(client.run(_worker_gpu_peak_mb).values())
        (tag, chunk) = min(best, key=best.get)
        res["e2e_best_layout"] = f"{tag}_chunk{chunk}"
        res["e2e_s"] = best[(tag, chunk)]
        res["e2e_over_floor"] = res["e2e_s"] / res["floor_s"]
        res["e2e_over_whole"] = res["e2e_s"] / res["whole_s"]
        res["e2e_mvox_s"] = np.prod(shape) / res["e2e_s"] / 1e6
        res["big_mvox_s"] = max(res[f"big_mvox_s_{t}"] for t in {k[0] for k in best})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["projected_s_512x512x200"] = 512 * 512 * 200 / (res["big_mvox_s"] * 1e6)
    res["published_deepfinder_m40_s_512x512x200"] = 20 * 60
    return dict(res)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volumes, fewer windows")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu, to check the script")
    parser.add_argument("--part", choices=("all", "batch"), default="all", help="batch: only the batch-size sweep")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_predict_gpu: no CUDA GPU is visible (use --device cpu to check the script)")
    t = time.perf_counter()
    run(args.quick, args.device, args.part)
    print(f"bench_wall_s: {time.perf_counter() - t:.1f}")
    os._exit(0)


if __name__ == "__main__":
    main()
