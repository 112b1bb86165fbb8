"""Training from a patch stack (``deepict mine``): the Autoencoder3D and EDSS3D data source.

A patch stack is a Zarr array (N, Z, Y, X) float32 of patches already normalised, chunked along N;
a label stack beside it (N, Z, Y, X) uint8 holds 0 for background and ``k`` for the k-th class.
A seeded random ``validation_fraction`` of the patches is held out. Batch ``k`` is drawn from a
generator seeded with ``(seed, k)`` (as for tomograms), so batches are the same whatever the number
of loader threads and whatever step a run resumes at. Stacks up to :data:`MAX_IN_MEMORY` bytes are
read once into memory; larger ones are read per batch, each needed chunk once.

A ``data.patch_size`` smaller than the stack's patches trains on random crops of that size (the
validation on centre crops). Patches cut around detected centres hold their object in the middle;
a fully convolutional network trained on them alone can learn "the middle of the window is the
object" (zero padding tells it where the border is), which then fails on whole tomograms. Random
crops move the object around the window.

The targets are what the objective compares the output with: for an autoencoder the (augmented)
input itself (MSE), for segmentation one binary mask per class (the existing losses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.train.augment import augment
from deepict_dask.train.config import AugmentConfig, TrainConfig, format_validation_error

if TYPE_CHECKING:
    from deepict_dask.train.loop import TrainResult

MAX_IN_MEMORY = 2 * 2**30  # bytes: smaller stacks are read into memory once


def open_stack_array(path: str | Path, what: str) -> Any:
    """Open a Zarr array read-only; anything else (missing, a group, not Zarr) is an InputError."""
    import zarr

    if not Path(path).exists():
        raise InputError(f"{what} not found", path)
    try:
        arr = zarr.open_array(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{what} is not a Zarr array ({type(exc).__name__})", path) from exc
    if arr.ndim != 4:
        raise InputError(f"{what} must be (N, Z, Y, X), got shape {tuple(arr.shape)}", path)
    return arr


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) patch indices, sorted: a seeded random ``fraction`` (at least one) held out."""
    n_val = 0 if fraction <= 0 else max(1, int(round(fraction * n)))
    perm = np.random.default_rng([seed, 11]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _take(arr: Any, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (any order, repeats allowed) of a numpy or Zarr array; Zarr chunks read once each."""
    if isinstance(arr, np.ndarray):
        return arr[idx]
    uniq, inverse = np.unique(idx, return_inverse=True)
    return np.asarray(arr.get_orthogonal_selection((uniq,)))[inverse]


def _voxel_size(arr: Any, override: float | None, path: str) -> float:
    if override is not None:
        return float(override)
    vs = arr.attrs.get("voxel_size")
    try:
        value = float(np.mean(np.asarray(vs, dtype=float)))
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ConfigError("the patch stack has no voxel_size attribute: set data.voxel_size (Å)", path)
    return value


@dataclass
class PatchStack:
    """An opened patch stack (+ labels) with its train/validation split."""

    path: str
    patches: Any  # numpy array when small enough, else the Zarr array
    labels: Any | None
    classes: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray
    voxel_size: float
    labels_path: str | None = None
    crop: tuple[int, int, int] | None = None  # train on random crops of this size (None: whole patches)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.patches.shape[1:])  # type: ignore[return-value]

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Patches (n, Z, Y, X) float32 and labels (n, Z, Y, X) uint8 (None without labels)."""
        img = _take(self.patches, idx).astype(np.float32, copy=False)
        lab = None if self.labels is None else _take(self.labels, idx)
        return img, lab

    def targets(self, img: np.ndarray, lab: np.ndarray | None) -> np.ndarray:
        """Per patch: (1, Z, Y, X) float32 = the image (reconstruction) or (C, Z, Y, X) uint8 masks."""
        if lab is None:
            return img[:, None].copy()
        ids = np.arange(1, len(self.classes) + 1, dtype=lab.dtype).reshape(1, -1, 1, 1, 1)
        return (lab[:, None] == ids).astype(np.uint8)

    def validation(self, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The first ``limit`` held-out patches (centre crops) as (x, y) batch arrays; None without a split."""
        if not len(self.val_idx):
            return None
        img, lab = self.read(self.val_idx[:limit])
        if self.crop is not None:
            sl = (slice(None),) + tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(img.shape[1:], self.crop))
            img, lab = img[sl], (None if lab is None else lab[sl])
        return np.ascontiguousarray(img[:, None]), np.ascontiguousarray(self.targets(img, lab))

    def summary(self) -> dict[str, Any]:
        return {"patch_stack": {"patches": self.path, "labels": self.labels_path,
                                "patches_total": int(self.patches.shape[0]), "train": int(len(self.train_idx)),
                                "validation": int(len(self.val_idx)), "patch_shape": list(self.patch_shape),
                                "crop": list(self.crop) if self.crop else None}}


class StackSampler:
    """Batches of random training patches (``PatchSampler``'s interface, for :class:`BatchLoader`)."""

    def __init__(self, stack: PatchStack):
        self.stack = stack

    def batch(self, rng: np.random.Generator, n: int, aug: AugmentConfig | None) -> tuple[np.ndarray, np.ndarray]:
        pool = self.stack.train_idx
        idx = rng.choice(pool, size=n, replace=len(pool) < n)
        img, lab = self.stack.read(idx)
        if self.stack.crop is not None:
            img, lab = self._crop(rng, img, lab)
        if aug is None:
            return np.ascontiguousarray(img[:, None]), self.stack.targets(img, lab)
        xs, ys = [], []
        for i in range(n):
            if lab is None:
                # the target is the augmented input itself: the autoencoder reproduces what it sees
                x, _ = augment(img[i], np.empty((0,) + img.shape[1:], np.uint8), rng, aug, 3)
                y = x[None].copy()
            else:
                x, y = augment(img[i], self.stack.targets(img[i:i + 1], lab[i:i + 1])[0], rng, aug, 3)
            xs.append(x[None])
            ys.append(y)
        return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))

    def _crop(self, rng: np.random.Generator, img: np.ndarray,
              lab: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        crop = self.stack.crop
        assert crop is not None
        xs, ls = [], []
        for i in range(len(img)):
            o = [int(rng.integers(0, n - c + 1)) for n, c in zip(img.shape[1:], crop)]
            sl = tuple(slice(a, a + c) for a, c in zip(o, crop))
            xs.append(img[i][sl])
            if lab is not None:
                ls.append(lab[i][sl])
        return np.stack(xs), (np.stack(ls) if lab is not None else None)


def open_patch_stack(cfg: TrainConfig) -> PatchStack:
    """Open and check ``cfg.data.patch_stack``; without ``cfg.data.patch_size`` sets it to the stack's patch shape.

    Raises
    ------
    InputError
        A stack that is missing, not a 4D Zarr array, not floating point, labels of another shape,
        label values without a class, labels without a single labelled voxel.
    ConfigError
        A ``data.patch_size`` larger than the stack's patches, too few patches to split, no voxel size.
    """
    src = cfg.data.patch_stack
    assert src is not None
    patches = open_stack_array(src.patches, "patch stack")
    if patches.dtype.kind != "f":
        raise InputError(f"patch stack must be floating point (normalised patches), got {patches.dtype}", src.patches)
    n, shape = int(patches.shape[0]), [int(s) for s in patches.shape[1:]]
    crop = None
    if cfg.data.patch_size is not None and list(cfg.data.patch_size) != shape:
        if any(c > s for c, s in zip(cfg.data.patch_size, shape)):
            raise ConfigError(f"data.patch_size {cfg.data.patch_size} is larger than the patch stack's patches "
                              f"{shape} (smaller trains on random crops)", src.patches)
        crop = tuple(int(c) for c in cfg.data.patch_size)
    cfg.data.patch_size = list(crop or shape)
    train_idx, val_idx = split_indices(n, cfg.data.validation_fraction, cfg.training.seed)
    if not len(train_idx):
        raise ConfigError(f"the patch stack has {n} patch(es): none left to train on after holding out "
                          f"validation_fraction {cfg.data.validation_fraction}", src.patches)
    labels = None
    if src.labels is not None:
        labels = open_stack_array(src.labels, "label stack")
        if tuple(labels.shape) != tuple(patches.shape):
            raise InputError(f"label stack has shape {tuple(labels.shape)}, the patch stack {src.patches} has "
                             f"{tuple(patches.shape)}", src.labels)
        if labels.dtype.kind not in "iu":
            raise InputError(f"label stack must hold integer class ids, got {labels.dtype}", src.labels)
        top = _max_label(labels)
        if top == 0:
            raise InputError("label stack has no labelled voxel (all background)", src.labels)
        if top > len(cfg.classes):
            raise InputError(f"label value {top} has no class: classes are {cfg.classes} (values 1..{len(cfg.classes)})",
                             src.labels)
    vs = _voxel_size(patches, cfg.data.voxel_size, src.patches)
    in_memory = patches.nbytes + (labels.nbytes if labels is not None else 0) <= MAX_IN_MEMORY
    if in_memory:
        patches = np.asarray(patches[...])
        labels = None if labels is None else np.asarray(labels[...])
    return PatchStack(src.patches, patches, labels, list(cfg.classes), train_idx, val_idx, vs, src.labels, crop)


def _max_label(labels: Any) -> int:
    """The largest label value, chunk by chunk (bounded memory whatever the stack's size)."""
    import dask.array as da

    return int(da.from_zarr(labels).max().compute(scheduler="threads"))


# ------------------------------------------------------------------------------------------ entry points


def _stack_length(path: str | Path) -> int:
    return int(open_stack_array(path, "patch stack").shape[0])


def stack_config(*, name: str, model: dict[str, Any], patches: str | Path, labels: str | Path | None,
                 classes: Sequence[str], out: str | Path, batch_size: int, max_epochs: int, patience: int,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99), validation_fraction: float = 0.1,
                 validation_patches: int = 512, augment_patches: bool = False, seed: int = 0,
                 device: str = "auto", threads: int | None = None, voxel_size: float | None = None,
                 max_minutes: float | None = None, activation: str = "softmax",
                 crop: Sequence[int] | None = None, centre_sigma: float | None = None) -> TrainConfig:
    """The TrainConfig of the published patch-stack recipe: Adam with a constant rate, one validation per
    epoch (a pass over the training patches), early stopping after ``patience`` epochs without a
    better validation loss, the best model kept.

    Parameters
    ----------
    name : str
        The model's name.
    model : dict
        Architecture arguments (``kind`` and its settings).
    patches : path
        The patch stack (Zarr array, N x Z x Y x X).
    labels : path, optional
        Per-patch class labels (EDSS3D); None for an autoencoder.
    classes : sequence of str
        Class names (empty for an autoencoder).
    out : path
        Output directory; the model is ``out/model.safetensors``.
    batch_size, max_epochs, patience : int
        Patches per step, the epoch limit, and epochs without improvement before stopping.
    lr : float
        Adam's (constant) learning rate.
    betas : (float, float)
        Adam's betas.
    validation_fraction : float
        Share of the patches held out for validation.
    validation_patches : int
        Held-out patches scored every epoch (at most).
    augment_patches : bool
        Rotate and jitter patches; False turns every augmentation off.
    seed : int
        Seed of the split, sampling and initialisation.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads : int, optional
        CPU threads of torch.
    voxel_size : float, optional
        Angstrom per voxel recorded in the model.
    max_minutes : float, optional
        Stop after this much training time.
    activation : str
        ``"softmax"`` or ``"sigmoid"`` output of a classifier (sets a CE or BCE loss).
    crop : sequence of int, optional
        Train on random crops (z, y, x) of the patches.
    centre_sigma : float, optional
        Autoencoder only: the reconstruction error weighed by a Gaussian of this sigma (voxels) around
        the patch centre.

    Returns
    -------
    TrainConfig
        The validated configuration.
    """
    from deepict_dask.train.config import parse_config

    n_train = len(split_indices(_stack_length(patches), validation_fraction, seed)[0])
    per_epoch = max(1, math.ceil(n_train / batch_size))
    data: dict[str, Any] = {
        "name": name, "dim": 3, "classes": list(classes), "model": model,
        "data": {"patch_stack": {"patches": str(patches), "labels": str(labels) if labels else None},
                 "batch_size": batch_size, "validation_fraction": validation_fraction, "voxel_size": voxel_size,
                 "patch_size": list(crop) if crop else None},
        "augment": {} if augment_patches else {"rotate_180": False, "flip": False, "intensity_scale": 0.0,
                                                "intensity_shift": 0.0, "noise_std": 0.0},
        "optimizer": {"lr": lr, "betas": list(betas), "schedule": "constant", "warmup_steps": 0},
        "training": {"epochs": max_epochs, "steps_per_epoch": per_epoch, "validate_every": per_epoch,
                     "validation_patches": validation_patches, "early_stopping": patience, "seed": seed,
                     "device": device, "threads": threads, "max_minutes": max_minutes},
        "output": {"dir": str(out), "model": str(Path(out) / "model.safetensors")},
    }
    if classes:
        data["activation"] = activation
        data["loss"] = [{"kind": "ce"}] if activation == "softmax" else [{"kind": "bce"}]
    elif centre_sigma is not None:
        data["loss"] = [{"kind": "mse", "centre_sigma": centre_sigma}]
    return parse_config(data)


class StackTrainOptions(BaseModel):
    """How to train on a patch stack; the defaults follow the published Autoencoder3D/EDSS3D recipe."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(None, ge=1, description="default: 8 for the autoencoder, 128 for EDSS3D")
    max_epochs: int = Field(200, ge=1, description="upper bound; early stopping usually ends training first")
    patience: int = Field(20, ge=1, description="epochs without a better validation loss before stopping")
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    validation_patches: int = Field(512, ge=1, description="held-out patches scored every epoch (at most)")
    crop: list[int] | None = Field(None, min_length=3, max_length=3, description="train on random crops "
                                   "(z y x) of the patches, so objects are not always centred (default: whole patches)")
    augment: bool | None = Field(None, description="180° rotations + intensity jitter; default: off for the "
                                 "autoencoder (as published), on for EDSS3D (few weakly labelled patches)")
    centre_sigma: float | None = Field(None, gt=0, description="autoencoder only: weigh the reconstruction error "
                                       "by a Gaussian of this sigma (voxels) around the patch centre, so codes "
                                       "describe what lies at the centre (default: every voxel alike, as published)")
    model: dict[str, Any] = Field(default_factory=dict, description="architecture arguments over the defaults")
    name: str | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    voxel_size: float | None = Field(None, gt=0, description="default: the patch stack's voxel_size attribute")
    max_minutes: float | None = Field(None, gt=0)
    progress: bool = False


def _options(options: StackTrainOptions | dict[str, Any] | None) -> StackTrainOptions:
    if isinstance(options, StackTrainOptions):
        return options
    try:
        return StackTrainOptions.model_validate(options or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc


def _run(cfg: TrainConfig, opts: StackTrainOptions) -> TrainResult:
    from deepict_dask.train.loop import train

    return train(cfg, progress=opts.progress, command="")


def train_autoencoder(patches: str | Path, out: str | Path,
                      options: StackTrainOptions | dict[str, Any] | None = None) -> TrainResult:
    """Train an Autoencoder3D on a patch stack (MSE reconstruction); the model goes to ``out/model.safetensors``.

    Parameters
    ----------
    patches
        Zarr array (N, Z, Y, X) float32 of normalised patches (``deepict mine patches``).
    out
        Run directory: checkpoints, ``log.csv``, ``config.json`` and the model file.
    options
        :class:`StackTrainOptions` (or the same as a mapping).

    Returns
    -------
    TrainResult
        Where the model went, the steps run, the best validation loss, whether it stopped early.
    """
    opts = _options(options)
    return _run(autoencoder_train_config(patches, out, opts), opts)


def train_edss3d(patches: str | Path, labels: str | Path, classes: Sequence[str], out: str | Path,
                 options: StackTrainOptions | dict[str, Any] | None = None) -> TrainResult:
    """Train an EDSS3D segmentation network on weakly labelled patches (softmax, cross-entropy).

    Parameters
    ----------
    patches, labels
        Zarr arrays (N, Z, Y, X): normalised patches (float32) and their labels (uint8, 0 background,
        ``k`` the k-th of ``classes``), e.g. written by :func:`deepict_dask.mine.labels.write_weak_labels`.
    classes
        Class names, in label-value order.
    out
        Run directory; the model (``out/model.safetensors``) runs through ``deepict predict``.
    options
        :class:`StackTrainOptions` (or the same as a mapping).

    Returns
    -------
    TrainResult
        Where the model went, the steps run, the best validation scores, whether it stopped early.
    """
    opts = _options(options)
    return _run(edss3d_train_config(patches, labels, classes, out, opts), opts)


def autoencoder_train_config(patches: str | Path, out: str | Path,
                             options: StackTrainOptions | dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of an Autoencoder3D on ``patches`` (batch 8, no augmentation, as published)."""
    opts = _options(options)
    return stack_config(name=opts.name or "autoencoder3d", model={"kind": "Autoencoder3D", **opts.model},
                        patches=patches, labels=None, classes=[], out=out, batch_size=opts.batch_size or 8,
                        centre_sigma=opts.centre_sigma, **_common(opts, augment_default=False))


def edss3d_train_config(patches: str | Path, labels: str | Path, classes: Sequence[str], out: str | Path,
                        options: StackTrainOptions | dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of EDSS3D on weakly labelled patches (batch 128, augmentation on)."""
    opts = _options(options)
    if opts.centre_sigma is not None:
        raise ConfigError("centre_sigma weighs the autoencoder's reconstruction error; EDSS3D is trained on labels")
    return stack_config(name=opts.name or "edss3d", model={"preset": "edss3d", **opts.model}, patches=patches,
                        labels=labels, classes=list(classes), out=out, batch_size=opts.batch_size or 128,
                        **_common(opts, augment_default=True))


def _common(opts: StackTrainOptions, augment_default: bool) -> dict[str, Any]:
    return {"max_epochs": opts.max_epochs, "patience": opts.patience, "lr": opts.lr, "betas": opts.betas,
            "validation_fraction": opts.validation_fraction, "validation_patches": opts.validation_patches,
            "augment_patches": augment_default if opts.augment is None else opts.augment, "seed": opts.seed,
            "device": opts.device, "threads": opts.threads, "voxel_size": opts.voxel_size,
            "max_minutes": opts.max_minutes, "crop": opts.crop}
