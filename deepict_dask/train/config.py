"""The training configuration (YAML, validated with pydantic: unknown keys are errors).

Paths in a config file are relative to the file's directory unless absolute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepict_dask.errors import ConfigError, InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelSource(_Strict):
    """Where one class's mask comes from: a label volume and the label value(s) that mean the class."""

    path: str
    values: list[int] | None = Field(None, description="label values of this class; default: any non-zero")
    group: str | None = Field(None, description="sub-image of an OME-Zarr store, e.g. labels/membranes")


class TomogramEntry(_Strict):
    """One annotated tomogram: the image and, per class, its labels.

    ``labels`` is either a mapping ``class -> LabelSource`` (or a plain path: any non-zero voxel),
    or one path to a label volume written by ``deepict labels`` (its class ids are read from it).
    """

    tomogram: str
    labels: str | dict[str, LabelSource | str]
    name: str | None = None

    @field_validator("labels")
    @classmethod
    def _plain_paths(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: LabelSource(path=s) if isinstance(s, str) else s for k, s in v.items()}
        return v


class PatchStackSource(_Strict):
    """Training patches cut beforehand (``deepict mine``): a Zarr array (N, Z, Y, X) float32, normalised.

    ``labels``: a Zarr array (N, Z, Y, X) uint8 of the same shape, 0 = background and ``k`` = the
    k-th class of ``classes`` (segmentation, e.g. EDSS3D on weak labels); none for an autoencoder.
    """

    patches: str
    labels: str | None = None


class DataConfig(_Strict):
    train: list[TomogramEntry] = Field(default_factory=list, description="annotated tomograms (or patch_stack)")
    patch_stack: PatchStackSource | None = Field(
        None, description="instead of tomograms: a stack of patches (+ labels); validation_fraction of the "
        "patches (a seeded random choice) is held out")
    validation: list[TomogramEntry] = Field(default_factory=list)
    validation_fraction: float = Field(
        0.2, ge=0, lt=1,
        description="without a validation list: share of tomograms held out; with one tomogram, the "
        "share of its x range held out",
    )
    patch_size: list[int] | None = Field(
        None, description="3D: z y x (default 64 64 64, with patch_stack: its patch shape); 2D: y x (default 288 288)")
    batch_size: int = Field(4, ge=1)
    object_fraction: float = Field(0.5, ge=0, le=1, description="share of patches centred on labelled objects")
    object_jitter: float = Field(0.25, ge=0, le=0.5, description="random shift of object-centred patches, x patch size")
    max_objects_per_class: int = Field(20000, ge=1)
    workers: int = Field(2, ge=1, description="loader threads")
    prefetch: int = Field(4, ge=1, description="batches prepared ahead")
    voxel_size: float | None = Field(None, gt=0, description="override the tomograms' voxel size (Å)")


class AugmentConfig(_Strict):
    rotate_180: bool = Field(True, description="3D: 180° rotations about z, y (tilt axis) or x; 2D: 90° rotations")
    flip: bool = Field(False, description="mirror flips (change handedness; keep the missing wedge)")
    intensity_scale: float = Field(0.1, ge=0)
    intensity_shift: float = Field(0.1, ge=0)
    noise_std: float = Field(0.0, ge=0)


class LossTerm(_Strict):
    kind: Literal["dice", "generalized_dice", "tversky", "bce", "ce", "mse"]
    weight: float = 1.0
    alpha: float = Field(0.5, ge=0, description="Tversky false-positive weight")
    beta: float = Field(0.5, ge=0, description="Tversky false-negative weight")
    centre_sigma: float | None = Field(None, gt=0, description="mse only: weigh each voxel's error by a Gaussian "
                                       "of this sigma (voxels) around the patch centre (default: every voxel alike)")

    @model_validator(mode="after")
    def _centre_sigma_is_mse_only(self) -> LossTerm:
        if self.centre_sigma is not None and self.kind != "mse":
            raise ValueError(f"centre_sigma weighs the reconstruction error: loss 'mse' only, not {self.kind!r}")
        return self


class OptimizerConfig(_Strict):
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's betas (Autoencoder3D/EDSS3D: 0.9 0.99)")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    step_every: int = Field(1000, ge=1, description="'step' schedule: multiply lr by gamma every N steps")
    gamma: float = Field(0.5, gt=0, le=1)
    min_lr_fraction: float = Field(0.05, ge=0, le=1, description="'cosine' schedule ends at lr x this")


class TrainingConfig(_Strict):
    steps: int | None = Field(None, ge=1, description="optimizer steps (iterations)")
    epochs: int | None = Field(None, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    validate_every: int = Field(100, ge=1)
    validation_patches: int = Field(16, ge=1)
    early_stopping: int | None = Field(10, ge=1, description="stop after N validations without improvement")
    monitor: Literal["loss", "f1"] = "loss"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: every available core)")
    mixed_precision: bool = Field(
        True, description="fp16 autocast + gradient scaling on CUDA; bf16 autocast on CPUs with native bf16 "
        "(AVX512-BF16 / AMX), fp32 on other CPUs")
    max_minutes: float | None = Field(
        None, gt=0, description="time budget: stop cleanly after this many minutes (validate, keep the best)")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between 'last' checkpoints (default: validate_every)")

    @model_validator(mode="after")
    def _length(self) -> TrainingConfig:
        if self.steps is None and self.epochs is None:
            self.steps = 2000
        return self

    @property
    def total_steps(self) -> int:
        return int(self.steps if self.steps is not None else self.epochs * self.steps_per_epoch)


class OutputConfig(_Strict):
    dir: str = Field(description="run directory: checkpoints, log.csv, config copy")
    model: str | None = Field(None, description="final model file (default: DIR/model.safetensors)")
    half: bool = Field(False, description="store weights as float16 (half the file size)")


# architecture kinds that learn to reconstruct their input (MSE on the image) instead of segmenting
AUTOENCODER_KINDS = ("Autoencoder3D",)


class TrainConfig(_Strict):
    name: str
    dim: Literal[2, 3] = 3
    classes: list[str] = Field(default_factory=list, description="segmentation classes (none for an autoencoder)")
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    model: dict[str, Any] = Field(
        default_factory=lambda: {"preset": "deepict_ribosome"},
        description="architecture: UNet2D/UNet3D arguments, or {'preset': name} plus overrides",
    )
    data: DataConfig
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(kind="dice"), LossTerm(kind="bce")])
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig
    voxel_size_tolerance: float = Field(0.1, ge=0)
    preprocessing: dict[str, Any] = Field(default_factory=dict, description="recorded in the model file")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        stack = self.data.patch_stack
        if stack is not None and self.data.train:
            raise ValueError("data: give either train (tomograms) or patch_stack, not both")
        if stack is None and not self.data.train:
            raise ValueError("data.train: at least one tomogram is needed (or give data.patch_stack)")
        if stack is not None and self.dim != 3:
            raise ValueError("data.patch_stack: patch stacks are 3D; set dim: 3")
        if self.data.patch_size is None and stack is None:
            self.data.patch_size = [64, 64, 64] if self.dim == 3 else [288, 288]
        if self.data.patch_size is not None and len(self.data.patch_size) != self.dim:
            raise ValueError(f"data.patch_size needs {self.dim} values for dim={self.dim}")
        self.model = _check_architecture(self.model, self.dim)
        if self.task == "autoencoder":
            return self._check_autoencoder()
        if not self.classes:
            raise ValueError("classes: at least one class is needed to train a segmentation model")
        if stack is not None and stack.labels is None:
            raise ValueError("data.patch_stack.labels: a segmentation model needs a label stack "
                             "(only an autoencoder, model.kind Autoencoder3D, trains on patches alone)")
        kinds = {t.kind for t in self.loss}
        if "mse" in kinds:
            raise ValueError("loss 'mse' is the autoencoder's reconstruction loss; segmentation uses dice, bce, ce, ...")
        if self.activation == "sigmoid" and "ce" in kinds:
            raise ValueError("loss 'ce' (categorical) needs activation: softmax; use 'bce' with sigmoid")
        if self.activation == "softmax" and "bce" in kinds:
            raise ValueError("loss 'bce' needs activation: sigmoid; use 'ce' with softmax")
        return self

    def _check_autoencoder(self) -> TrainConfig:
        kind = self.kind
        stack = self.data.patch_stack
        if stack is None:
            raise ValueError(f"data.patch_stack: model.kind {kind} trains on a patch stack (deepict mine patches), "
                             "not on annotated tomograms")
        if stack.labels is not None:
            raise ValueError(f"data.patch_stack.labels: model.kind {kind} learns from the patches alone; "
                             "drop the labels (or train EDSS3D with them)")
        if self.classes:
            raise ValueError(f"classes: model.kind {kind} reconstructs its input and has no classes")
        if "loss" not in self.model_fields_set:
            self.loss = [LossTerm(kind="mse")]
        if any(t.kind != "mse" for t in self.loss):
            raise ValueError(f"loss: model.kind {kind} is trained with 'mse' (reconstruction) only")
        if self.training.monitor == "f1":
            raise ValueError(f"training.monitor: f1 needs classes; model.kind {kind} is monitored by loss")
        return self

    @property
    def task(self) -> str:
        """``autoencoder`` (reconstruct the input, MSE) or ``segmentation`` (masks of ``classes``)."""
        return "autoencoder" if self.kind in AUTOENCODER_KINDS else "segmentation"

    @property
    def kind(self) -> str:
        """The architecture kind (``UNet3D``, ``EDSS3D``, ``Autoencoder3D``, ...), presets resolved."""
        from deepict_dask.models.unet import architecture_from

        return str(architecture_from(self.model).get("kind", "UNet3D" if self.dim == 3 else "UNet2D"))

    def resolve_paths(self, base: Path) -> TrainConfig:
        """Make every data/output path absolute relative to ``base`` (the config file's directory)."""

        def fix(p: str) -> str:
            q = Path(os.path.expanduser(p))
            return str(q if q.is_absolute() else (base / q))

        for entry in self.data.train + self.data.validation:
            entry.tomogram = fix(entry.tomogram)
            if isinstance(entry.labels, str):
                entry.labels = fix(entry.labels)
            else:
                for src in entry.labels.values():
                    src.path = fix(src.path)
        stack = self.data.patch_stack
        if stack is not None:
            stack.patches = fix(stack.patches)
            stack.labels = fix(stack.labels) if stack.labels else None
        self.output.dir = fix(self.output.dir)
        if self.output.model:
            self.output.model = fix(self.output.model)
        return self

    @property
    def model_path(self) -> Path:
        return Path(self.output.model) if self.output.model else Path(self.output.dir) / "model.safetensors"


def _check_architecture(model: dict[str, Any], dim: int) -> dict[str, Any]:
    """Resolve presets, default ``kind`` from ``dim`` and make sure the network can be built."""
    from deepict_dask.models.files import KINDS  # every registered network, the autoencoder's included
    from deepict_dask.models.unet import architecture_from

    try:
        arch = architecture_from(model)
    except KeyError as exc:
        raise ValueError(f"model: {exc.args[0]}") from None
    kind = arch.setdefault("kind", "UNet3D" if dim == 3 else "UNet2D")
    if kind not in KINDS:
        raise ValueError(f"model.kind: unknown {kind!r} (known: {', '.join(KINDS)})")
    if (kind == "UNet2D") != (dim == 2):
        raise ValueError(f"model.kind {kind} does not fit dim: {dim}")
    args = {k: v for k, v in arch.items() if k != "kind"}
    try:
        KINDS[kind](**args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model: bad {kind} arguments ({exc})") from None
    return dict(model)


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_config(data: Any, path: str | os.PathLike | None = None, base: Path | None = None) -> TrainConfig:
    """Validate a config mapping; errors name the offending key (``data.patch_size: ...``)."""
    if not isinstance(data, dict):
        raise ConfigError("a training config must be a YAML mapping", path)
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), path) from exc
    return cfg.resolve_paths(base or Path.cwd())


def load_config(path: str | os.PathLike) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise InputError("training config not found", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path) from exc
    return parse_config(data, path, path.resolve().parent)


EXAMPLE = """\
# deepict train CONFIG.yaml  -- paths are relative to this file
name: ribosome_membrane            # stored in the model file
dim: 3                             # 3 (volumes) or 2 (slice-wise, DeePiCt compartments)
classes: [ribosome, membrane]      # no background class
activation: sigmoid                # sigmoid: multi-label (DeePiCt); softmax: multi-class (DeepFinder)
model:                             # UNet3D/UNet2D arguments, or a preset plus overrides
  preset: deepict_ribosome         # deepict_2d, deepict_ribosome, deepict_membrane, deepict_fas, deepfinder
  initial_filters: 8
data:
  train:
    - tomogram: tomo_000.mrc       # MRC, Zarr or OME-Zarr; patches are read lazily
      labels:                      # per class: a mask path, or {path, values}
        ribosome: {path: tomo_000_labels.mrc, values: [1]}
        membrane: tomo_000_membrane.mrc
    - tomogram: tomo_001.mrc
      labels: tomo_001_labels.zarr # or one label volume from 'deepict labels' (class ids inside)
  validation: []                   # empty: hold out validation_fraction of the tomograms
  # patch_stack: {patches: weak/patches.zarr, labels: weak/labels.zarr}
  #                                # instead of train: patches from 'deepict mine' (model kind EDSS3D with
  #                                # labels, Autoencoder3D without); a smaller patch_size = random crops
  validation_fraction: 0.2
  patch_size: [64, 64, 64]
  batch_size: 4
  object_fraction: 0.5             # patches centred on labelled objects vs random patches
  workers: 2                       # loader threads
  prefetch: 4
augment:
  rotate_180: true                 # rotations that keep the missing wedge and handedness
  flip: false                      # mirror flips (change handedness)
  intensity_scale: 0.1
  intensity_shift: 0.1
  noise_std: 0.0
loss:                              # weighted sum: dice, generalized_dice, tversky, bce, ce
  - {kind: dice, weight: 1.0}
  - {kind: bce, weight: 1.0}
optimizer:
  lr: 0.001
  schedule: cosine                 # constant, cosine, step
  warmup_steps: 50
training:
  steps: 2000                      # or epochs: N with steps_per_epoch: M
  validate_every: 100
  validation_patches: 16
  early_stopping: 10               # validations without improvement
  monitor: loss                    # loss or f1
  seed: 0
  device: auto                     # auto, cpu, cuda (mixed precision on CUDA)
output:
  dir: runs/ribosome_membrane      # checkpoints (last, best), log.csv
  model: ribosome_membrane.safetensors
preprocessing: {}                  # recorded in the model, e.g. {filter: spectrum.csv} when the tomograms
                                   # were filtered beforehand with 'deepict filter' (inference must match)
"""
