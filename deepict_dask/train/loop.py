"""The training loop: Adam + schedule, validation, early stopping, checkpoints, resume, CSV log.

One loop for every network: U-Nets from annotated tomograms (:mod:`.data`), and from patch stacks
(:mod:`.patch_stack`) EDSS3D on weak labels or an autoencoder, whose objective is the MSE between
its output and its input (``make_loss``) and whose validation has a loss but no voxel F1.

Run directory layout (``output.dir``)::

    config.json            the validated configuration of the run
    log.csv                one row every ``log_every`` steps (train loss, lr, data wait) and at
                           every validation (val loss, voxel F1 per class)
    checkpoint_last.pt     model + optimizer + scaler + counters + RNG (atomic, weights_only-safe)
    checkpoint_best.pt     the same at the best validation so far
    model.safetensors      the final model (best weights), unless ``output.model`` says elsewhere
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepict_dask import __version__
from deepict_dask.errors import ConfigError, InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.volume import voxel_size_of
from deepict_dask.models.files import build_network, save_model
from deepict_dask.models.spec import ModelInfo
from deepict_dask.models.unet import architecture_from
from deepict_dask.train.config import TrainConfig
from deepict_dask.train.data import BatchLoader, Dataset, PatchSampler, build_dataset, fixed_patches
from deepict_dask.train.losses import ReconstructionLoss, SegmentationLoss
from deepict_dask.train.metrics import confusion, f1_scores
from deepict_dask.train.patch_stack import PatchStack, StackSampler, open_patch_stack

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ device


@dataclass
class DeviceSetup:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = full precision
    grad_scaling: bool


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX): autocast there is fast.

    Elsewhere bf16 is emulated and slower than fp32, so training stays in fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(requested: str, mixed_precision: bool, cuda_available: bool | None = None,
                   cpu_bf16: bool | None = None) -> DeviceSetup:
    """CUDA (fp16 autocast + GradScaler when ``mixed_precision``) if asked/available, else the CPU.

    On the CPU ``mixed_precision`` means bf16 autocast where the CPU has native bf16: 4-6x faster
    steps (``benchmarks/bench_train.py``), converging to the same validation scores as fp32
    (``examples/README_models.md``). bf16 keeps fp32's exponent range, so no gradient scaling.
    """
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == "cuda" and not has_cuda:
        raise ConfigError("training.device: cuda requested but no CUDA device is available")
    if requested == "cuda" or (requested == "auto" and has_cuda):
        amp = torch.float16 if mixed_precision else None
        return DeviceSetup(torch.device("cuda"), amp, amp is not None)
    bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    return DeviceSetup(torch.device("cpu"), torch.bfloat16 if mixed_precision and bf16 else None, False)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------ schedule


def learning_rate(cfg: TrainConfig, step: int) -> float:
    o = cfg.optimizer
    total = cfg.training.total_steps
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "step":
        return o.lr * o.gamma ** (step // o.step_every)
    frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    lo = o.lr * o.min_lr_fraction
    return lo + 0.5 * (o.lr - lo) * (1 + math.cos(math.pi * frac))


# ------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: an interrupted write never replaces a good checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True`` (no code execution); corrupt files are an InputError."""
    if not path.is_file():
        raise InputError("checkpoint not found (nothing to resume)", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"checkpoint is corrupt or unreadable ({type(exc).__name__}: {str(exc)[:120]})", path) from exc
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise InputError("not a deepict training checkpoint", path)
    return state


# ------------------------------------------------------------------------------------------ training


@dataclass
class TrainResult:
    model_path: Path
    steps: int
    best: dict[str, Any]
    data_wait_fraction: float
    voxels_per_second: float  # over the whole run, start-up included
    stopped_early: bool
    time_budget_reached: bool = False
    steady_voxels_per_second: float = 0.0  # after the warm-up steps: what sizing a longer run needs
    seconds_per_step: float = 0.0  # the steady-state median step time


WARMUP_STEPS = 10


def steady_throughput(step_times: Sequence[float], voxels_per_batch: int,
                      warmup: int = WARMUP_STEPS) -> tuple[float, float]:
    """(voxels/s, s/step) of the median step after ``warmup`` steps.

    The first steps pay for start-up (first batches, allocations, thread pools), so a short run's
    average hides the rate a long run gets. Runs shorter than twice the warm-up use their later half.
    """
    if not step_times:
        return 0.0, 0.0
    skip = warmup if len(step_times) > 2 * warmup else len(step_times) // 2
    per_step = float(np.median(step_times[skip:]))
    return voxels_per_batch / max(per_step, 1e-9), per_step


def _identity(cfg: TrainConfig) -> str:
    """What must match between a checkpoint and the config resuming from it."""
    return json.dumps({"dim": cfg.dim, "classes": cfg.classes, "activation": cfg.activation,
                       "model": architecture_from(cfg.model)}, sort_keys=True)


AUTOENCODER_CLASSES = ["reconstruction"]  # an autoencoder's one output channel: the reconstructed image


def make_info(cfg: TrainConfig, dataset: Dataset | PatchStack | None, voxel_size: float) -> ModelInfo:
    arch = architecture_from(cfg.model)
    arch.setdefault("kind", "UNet3D" if cfg.dim == 3 else "UNet2D")
    auto = cfg.task == "autoencoder"
    if auto:  # an autoencoder with a fully connected code is built for one patch shape: the training one
        arch.setdefault("patch_shape", list(cfg.data.patch_size or []))
    return ModelInfo(
        name=cfg.name, dim=cfg.dim, classes=AUTOENCODER_CLASSES if auto else list(cfg.classes),
        activation="sigmoid" if auto else cfg.activation, task=cfg.task, architecture=arch,
        patch_size=list(cfg.data.patch_size or []), voxel_size=voxel_size,
        voxel_size_tolerance=cfg.voxel_size_tolerance, normalization="zscore",
        preprocessing={"normalization": "zscore with the tomogram's global mean and std", **cfg.preprocessing},
        training={"data": dataset.summary() if dataset else {}}, software_version=__version__,
    )


class _CsvLog:
    def __init__(self, path: Path, classes: list[str], append: bool):
        self.fields = ["step", "epoch", "lr", "train_loss", "data_wait_fraction", "voxels_per_s", "val_loss",
                       "val_f1_mean"] + [f"val_f1_{c}" for c in classes] + ["elapsed_s"]
        new = not (append and path.is_file())
        self.fh = open(path, "w" if new else "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=self.fields)
        if new:
            self.writer.writeheader()

    def row(self, **values: Any) -> None:
        self.writer.writerow({k: values.get(k, "") for k in self.fields})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def make_loss(cfg: TrainConfig) -> torch.nn.Module:
    """The objective: MSE reconstruction for an autoencoder, else the segmentation loss terms."""
    if cfg.task == "autoencoder":
        return ReconstructionLoss(cfg.loss)
    return SegmentationLoss(cfg.loss, cfg.activation)


def _evaluate(net: torch.nn.Module, loss_fn: torch.nn.Module, val: tuple[np.ndarray, np.ndarray], batch: int,
              setup: DeviceSetup, activation: str | None) -> tuple[float, np.ndarray]:
    """Mean validation loss and voxel F1 per class (no classes: ``activation`` None, an empty array)."""
    net.eval()
    total, n = 0.0, 0
    counts = None
    with torch.no_grad():
        for i in range(0, len(val[0]), batch):
            x = torch.from_numpy(val[0][i:i + batch]).to(setup.device)
            y = torch.from_numpy(val[1][i:i + batch]).to(setup.device)
            with _autocast(setup):
                logits = net(x)
            total += float(loss_fn(logits, y)) * len(x)
            n += len(x)
            if activation is not None:
                c = confusion(logits.float(), y, activation)
                counts = c if counts is None else counts + c
    net.train()
    return total / max(n, 1), (f1_scores(counts) if counts is not None else np.zeros(0))


def _autocast(setup: DeviceSetup):
    if setup.amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=setup.device.type, dtype=setup.amp_dtype)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, command: str = "") -> TrainResult:
    """Train ``cfg``; returns where the model went and the best validation scores.

    ``resume=True`` continues from ``output.dir/checkpoint_last.pt`` (same batches from there on).

    Parameters
    ----------
    cfg : TrainConfig
        The training configuration (:func:`~deepict_dask.train.config.load_config`).
    resume : bool
        Continue from the last checkpoint.
    progress : bool
        Show a progress bar.
    command : str
        The command line, recorded in the model's metadata.

    Returns
    -------
    TrainResult
        The model file, steps run, the best validation scores and the throughput.
    """
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    tr = cfg.training
    setup = resolve_device(tr.device, tr.mixed_precision)
    if setup.device.type == "cpu":
        # every core given to training: the loader threads mostly wait on I/O and numpy, which
        # release the GIL (measured: see examples/README_models.md)
        torch.set_num_threads(tr.threads or available_cores())
    torch.manual_seed(tr.seed)
    np.random.seed(tr.seed % 2**32)

    dataset: Dataset | PatchStack
    sampler: PatchSampler | StackSampler
    val = None
    if cfg.data.patch_stack is not None:
        dataset = open_patch_stack(cfg)
        vs = dataset.voxel_size
        sampler = StackSampler(dataset)
        val = dataset.validation(tr.validation_patches)
    else:
        dataset = build_dataset(cfg)
        vs = cfg.data.voxel_size or float(np.mean(voxel_size_of(dataset.train[0].image)))
        sampler = PatchSampler(dataset.train, cfg.data.patch_size, cfg.dim, cfg.data.object_fraction,
                               cfg.data.object_jitter)
        if dataset.validation:
            vsampler = PatchSampler(dataset.validation, cfg.data.patch_size, cfg.dim, cfg.data.object_fraction, 0.25)
            val = fixed_patches(vsampler, tr.validation_patches, tr.seed)
    scored = None if cfg.task == "autoencoder" else cfg.activation  # voxel F1 only for classes

    info = make_info(cfg, dataset, vs)
    net = build_network(info).to(setup.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr, betas=cfg.optimizer.betas,
                           weight_decay=cfg.optimizer.weight_decay)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.grad_scaling)
    loss_fn = make_loss(cfg)

    step, best_value, bad, best_scores = 0, math.inf, 0, {}
    last_ck, best_ck = out / "checkpoint_last.pt", out / "checkpoint_best.pt"
    if resume:
        state = load_checkpoint(last_ck)
        if state.get("identity") != _identity(cfg):
            raise ConfigError("the config's classes/model differ from the checkpoint's; cannot resume", last_ck)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step, best_value, bad = int(state["step"]), float(state["best_value"]), int(state["bad"])
        best_scores = json.loads(state.get("best_scores", "{}"))
        torch.set_rng_state(state["torch_rng"])
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))

    total = tr.total_steps
    start_step = step
    ck_every = tr.checkpoint_every or tr.validate_every
    loader = BatchLoader(sampler, cfg.data.batch_size, tr.seed, cfg.augment, cfg.data.workers, cfg.data.prefetch,
                         start=step)
    csv_log = _CsvLog(out / "log.csv", cfg.classes, append=resume)
    voxels_per_batch = cfg.data.batch_size * math.prod(cfg.data.patch_size)

    def state_dict() -> dict[str, Any]:
        return {"model": net.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "best_value": best_value, "bad": bad, "best_scores": json.dumps(best_scores),
                "torch_rng": torch.get_rng_state(), "identity": _identity(cfg)}

    bar = _progress(progress)
    task = bar.add_task(cfg.name, total=total, completed=step) if bar else None
    t_start = time.perf_counter()
    wait0, run_loss, run_n, stopped, timed_out = 0.0, 0.0, 0, False, False
    budget_s = tr.max_minutes * 60.0 if tr.max_minutes else None
    t_window, steps_window, wait_window = time.perf_counter(), 0, 0.0
    step_times: list[float] = []  # batch wait + forward/backward/update, without validation
    net.train()
    try:
        if bar:
            bar.start()
        while step < total:
            out_of_time = budget_s is not None and time.perf_counter() - t_start >= budget_s
            if out_of_time:
                # the budget is spent: validate what was learnt since the last validation, then stop
                log.info("time budget of %g min reached at step %d", tr.max_minutes, step)
            t_step = time.perf_counter()
            x_np, y_np = next(loader)
            x = torch.from_numpy(x_np).to(setup.device, non_blocking=True)
            y = torch.from_numpy(y_np).to(setup.device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = learning_rate(cfg, step)
            opt.zero_grad(set_to_none=True)
            with _autocast(setup):
                logits = net(x)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at step {step} (loss {float(loss)}); lower optimizer.lr")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            run_loss += float(loss.detach())  # also waits for the device: the step is done
            step_times.append(time.perf_counter() - t_step)
            run_n += 1
            steps_window += 1
            validate = val is not None and (step % tr.validate_every == 0 or step == total or out_of_time)
            if step % 10 == 0 or validate or step == total:
                now = time.perf_counter()
                wait_window = loader.wait_time - wait0
                throughput = steps_window * voxels_per_batch / max(now - t_window, 1e-9)
                row: dict[str, Any] = {
                    "step": step, "epoch": f"{step / tr.steps_per_epoch:.2f}", "lr": f"{learning_rate(cfg, step - 1):.3g}",
                    "train_loss": f"{run_loss / run_n:.5f}",
                    "data_wait_fraction": f"{wait_window / max(now - t_window, 1e-9):.3f}",
                    "voxels_per_s": f"{throughput:.0f}", "elapsed_s": f"{now - t_start:.1f}",
                }
                wait0, t_window, steps_window, run_loss, run_n = loader.wait_time, now, 0, 0.0, 0
                if validate:
                    vloss, f1 = _evaluate(net, loss_fn, val, cfg.data.batch_size, setup, scored)
                    row["val_loss"] = f"{vloss:.5f}"
                    if f1.size:
                        row.update({"val_f1_mean": f"{f1.mean():.4f}",
                                    **{f"val_f1_{c}": f"{v:.4f}" for c, v in zip(cfg.classes, f1)}})
                    value = vloss if tr.monitor == "loss" else -float(f1.mean())
                    if value < best_value:
                        best_value, bad = value, 0
                        best_scores = {"step": step, "val_loss": round(vloss, 5)}
                        if f1.size:
                            best_scores["val_voxel_f1"] = {c: round(float(v), 4) for c, v in zip(cfg.classes, f1)}
                        save_checkpoint(best_ck, state_dict())
                    else:
                        bad += 1
                    if bar:
                        f1_text = f" f1 {f1.mean():.3f}" if f1.size else ""
                        bar.update(task, description=f"{cfg.name} val_loss {vloss:.3f}{f1_text}")
                    if tr.early_stopping and bad >= tr.early_stopping:
                        stopped = True
                csv_log.row(**row)
            if out_of_time:
                stopped, timed_out = True, True
            if step % ck_every == 0 or step == total or stopped:
                save_checkpoint(last_ck, state_dict())
            if bar:
                bar.update(task, completed=step)
            if stopped:
                if not timed_out:
                    log.info("early stopping at step %d", step)
                break
    finally:
        loader.close()
        csv_log.close()
        if bar:
            bar.stop()
    elapsed = time.perf_counter() - t_start
    wait_fraction_total = loader.wait_time / max(elapsed, 1e-9)
    throughput = (step - start_step) * voxels_per_batch / max(elapsed, 1e-9)
    steady, per_step = steady_throughput(step_times, voxels_per_batch)

    if best_ck.is_file() and val is not None:
        net.load_state_dict(load_checkpoint(best_ck)["model"])
    info.training.update({
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "steps": step, "seed": tr.seed,
        "stopped_early": stopped and not timed_out, "time_budget_reached": timed_out, "scores": best_scores,
        "command": command, "config": json.loads(cfg.model_dump_json()), "device": str(setup.device),
        "precision": str(setup.amp_dtype).replace("torch.", "") if setup.amp_dtype else "float32",
        "minutes": round(elapsed / 60, 2),
    })
    path = save_model(cfg.model_path, net, info, half=cfg.output.half)
    return TrainResult(path, step, best_scores, wait_fraction_total, throughput, stopped and not timed_out,
                       timed_out, steady, per_step)


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=False, console=Console(stderr=True))  # stdout keeps only the results
