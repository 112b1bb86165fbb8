"""The run configuration (``run.yaml``): a pydantic schema, loaded safely with line numbers.

Errors name the offending key *and* its line in the file, because users edit these files by hand:
``run.yaml: line 12, targets[0].pick.threshold: Input should be less than or equal to 1``.
Relative paths in the file are resolved against the directory holding the file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deepict_dask.cluster import DEFAULT_WORKER_WAIT
from deepict_dask.errors import ConfigError
from deepict_dask.inference.options import PredictOptions
from deepict_dask.models.spec import DEMO_MODELS as SHIPPED_MODELS
from deepict_dask.pick.options import ContextRule, PickOptions  # noqa: F401  (ContextRule: config's vocabulary)
from deepict_dask.preprocess.options import FilterOptions
from deepict_dask.yaml_config import located, parse_yaml_model

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must start with a letter and hold only letters, digits, '_' or '.'")
    return value


class InputsConfig(_Strict):
    """Which tomograms to process."""

    paths: list[str] = Field(default_factory=list, description="files or glob patterns (MRC/REC/Zarr/OME-Zarr)")
    manifest: str | None = Field(None, description="text file with one path per line, or a CSV with a 'path' column")
    voxel_size: float | None = Field(None, gt=0, description="expected voxel size in A (None: the first file's); also used for files whose header has none")
    voxel_size_tolerance: float = Field(0.02, ge=0, lt=1, description="relative tolerance on the voxel size")
    truth: str | None = Field(None, description="ground-truth table per tomogram, '{name}' is replaced")

    @model_validator(mode="after")
    def _some_input(self) -> InputsConfig:
        if not self.paths and not self.manifest:
            raise ValueError("give 'paths' (files or globs) or a 'manifest' file")
        return self


class PreprocessConfig(_Strict):
    normalize: bool = True
    filter: FilterOptions = Field(default_factory=FilterOptions)


FLAT_PREDICT_KEYS = {"patch": "window", "overlap": "margin", "blend": "blend", "batch_size": "batch_size",
                     "dtype": "dtype", "device": "device"}
"""Schema 1 kept these settings flat on a model; schema 2 has them under ``predict:`` (new names)."""


class ModelConfig(_Strict):
    """A trained network to run on every tomogram, with the settings it runs with."""

    name: str
    path: str = Field(description="model file (.safetensors) or a shipped model: demo3d, demo2d")
    predict: PredictOptions = Field(default_factory=PredictOptions, description="how to run it (window, margin, ...)")

    _name = field_validator("name")(_check_name)

    @model_validator(mode="before")
    @classmethod
    def _flat_keys(cls, data: Any) -> Any:
        """Move schema-1 keys (``patch: 96`` on the model) under ``predict:``, warning once with the new spelling."""
        if not isinstance(data, dict):
            return data
        flat = [k for k in FLAT_PREDICT_KEYS if k in data]
        if not flat:
            return data
        data = dict(data)
        predict = dict(data.get("predict") or {})
        for key in flat:
            value = data.pop(key)
            if value is not None:
                predict.setdefault(FLAT_PREDICT_KEYS[key], value)
        data["predict"] = predict
        spelled = ", ".join(f"predict.{FLAT_PREDICT_KEYS[k]}" for k in flat)
        log.warning("models[%s]: %s on a model is the old spelling (schema 1); write %s",
                    data.get("name", "?"), ", ".join(flat), spelled)
        return data


# the flat picking keys of schema version 1, now under a target's ``pick:``
_V1_PICK_KEYS = ("threshold", "min_size", "max_size", "cluster", "connectivity", "min_distance", "coarsen",
                 "bandwidth", "context")


def migrate_target(target: Any) -> tuple[Any, list[str]]:
    """A version-1 target (flat picking keys) in the version-2 spelling, and the old keys it had.

    Old meanings are kept: a context rule without ``mode`` was ``intersection``, its ``distance``
    counted only for ``colocalization`` (default 0), and the method parameters only for their method.
    """
    if not isinstance(target, dict):
        return target, []
    old = [k for k in _V1_PICK_KEYS if k in target]
    if not old:
        return target, []
    new = {k: v for k, v in target.items() if k not in _V1_PICK_KEYS}
    pick = dict(new.get("pick") or {})
    for key in ("threshold", "min_size", "max_size", "connectivity"):
        if key in target:
            pick[key] = target[key]
    if target.get("cluster") is not None:
        method: dict[str, Any] = {"name": target["cluster"]}
        if target["cluster"] in ("watershed", "peaks"):
            method.update({k: target[k] for k in ("min_distance", "coarsen") if target.get(k) is not None})
        if target["cluster"] == "meanshift" and target.get("bandwidth") is not None:
            method["bandwidth"] = target["bandwidth"]
        pick["method"] = method
    rules = target.get("context")
    rules = [rules] if isinstance(rules, dict) else rules
    if isinstance(rules, list) and len(rules) == 1 and isinstance(rules[0], dict):
        rule = {"mode": "intersection", **rules[0]}
        if rule["mode"] == "colocalization":
            rule.setdefault("distance", 0.0)
        else:
            rule.pop("distance", None)
        pick["context"] = rule
    elif rules:
        pick["context"] = rules  # PickOptions says what is wrong with it
    new["pick"] = pick
    return new, old


def _migration_warning(where: str, keys: list[str]) -> None:
    log.warning("%s: the keys %s are the old (schema_version 1) spelling; write them under 'pick:', e.g. "
                "pick: {threshold: 0.5, method: {name: watershed, min_distance: 40A}, context: {target: cytosol, "
                "mode: intersection}} (cluster is now pick.method; min_distance, coarsen, bandwidth its parameters)",
                where, ", ".join(sorted(set(keys))))


class TargetConfig(_Strict):
    """One thing to find: a class of a model, turned into particles or a segmentation mask.

    ``pick`` holds the picking settings (:class:`~deepict_dask.pick.options.PickOptions`); a
    segmentation uses its ``threshold``. Its context rule names a segmentation target.
    """

    name: str
    model: str = Field(description="name of a model in 'models'")
    class_: str | None = Field(None, alias="class", description="class of the model (default: the name)")
    kind: Literal["particles", "segmentation"] = "particles"
    pick: PickOptions = Field(default_factory=PickOptions, description="picking settings (threshold, method, "
                              "sizes, context; unset ones: the values tuned for the model and class, else built in)")

    _name = field_validator("name")(_check_name)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, value: Any) -> Any:
        value, old = migrate_target(value)
        if old:
            _migration_warning(f"target {value.get('name')!r}", old)
        return value

    @property
    def model_class(self) -> str:
        return self.class_ or self.name


class OutputConfig(_Strict):
    dir: str = Field("deepict_out", description="run directory (created)")
    table_formats: list[str] = Field(
        default_factory=lambda: ["csv", "star"],
        description="table formats written per tomogram (tables/<name>/) and for the whole run (particles.*): any "
        "registered format (deepict table --help). The run-wide particles.csv is always written; json (one file "
        "per target), ndjson and motl hold one tomogram and are written per tomogram only; copick is a project "
        "directory, written for the whole run only (particles_copick/)")
    chunks: int = Field(128, ge=16, description="OME-Zarr chunk edge, voxels")
    levels: int = Field(3, ge=1, le=8, description="pyramid levels of the converted tomogram")
    report: bool = True
    tilt_series_pixel_size: float | None = Field(
        None, gt=0, description="Angstrom, for RELION's rlnTomoTiltSeriesPixelSize in STAR tables "
        "(default: the tomogram voxel size is assumed, and the files say so)")

    @field_validator("table_formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        from deepict_dask.io.tables import format_names

        unknown = [f for f in value if f not in format_names()]
        if unknown:
            raise ValueError(f"unknown table format(s) {unknown}; the formats are {', '.join(format_names())}")
        return value


class EvaluationConfig(_Strict):
    tolerance: float = Field(60.0, gt=0, description="match radius for picks vs truth")
    unit: Literal["A", "vox"] = "A"


class ExecutionConfig(_Strict):
    max_in_flight: int | None = Field(None, ge=1, description="tomograms in flight (default: 2 per worker)")
    retries: int = Field(1, ge=0, description="extra attempts of a failing task (worker deaths always retry)")
    gpu: Literal["auto", "yes", "no"] = Field(
        "auto", description="put a GPU=1 resource on predictions: auto = when some worker offers GPU"
    )


class AdaptConfig(_Strict):
    minimum: int = Field(0, ge=0, description="fewest jobs")
    maximum: int = Field(ge=1, description="most jobs")

    @model_validator(mode="after")
    def _order(self) -> AdaptConfig:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is larger than maximum ({self.maximum})")
        return self


class ClusterConfig(_Strict):
    kind: Literal["local", "scheduler", "slurm", "pbs", "sge"] = "local"
    scheduler: str | None = Field(None, description="address or scheduler file (kind: scheduler)")
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str | None = None
    jobs: int = Field(1, ge=1, description="jobqueue jobs to request")
    jobqueue: dict[str, Any] = Field(default_factory=dict, description="extra jobqueue cluster arguments")
    adapt: AdaptConfig | None = Field(None, description="adaptive scaling of jobqueue jobs")
    dashboard: str | None = Field(None, description="dashboard HOST:PORT (default 127.0.0.1:8787: this host only)")
    worker_wait: float = Field(DEFAULT_WORKER_WAIT, gt=0, description="seconds a jobqueue cluster may take to start its first worker")

    @model_validator(mode="after")
    def _address(self) -> ClusterConfig:
        if self.kind == "scheduler" and not self.scheduler:
            raise ValueError("kind 'scheduler' needs 'scheduler: ADDRESS' (or a scheduler file)")
        return self


class RunConfig(_Strict):
    """The whole ``deepict run`` configuration."""

    schema_version: Literal[1, 2] = Field(2, description="layout of this file; 1: model settings flat on models[] and picking keys flat on targets (still read, with a warning)")
    inputs: InputsConfig
    output: OutputConfig = Field(default_factory=OutputConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    targets: list[TargetConfig] = Field(default_factory=list)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="before")
    @classmethod
    def _migrate_targets(cls, value: Any) -> Any:
        """Version-1 targets in the version-2 spelling, with one warning for the whole file."""
        if not isinstance(value, dict) or not isinstance(value.get("targets"), list):
            return value
        migrated = [migrate_target(t) for t in value["targets"]]
        old = [k for _, keys in migrated for k in keys]
        if old:
            _migration_warning("targets", old)
        return {**value, "targets": [t for t, _ in migrated]}

    def reference_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """Cross-references that a field type cannot express, as (location, message) pairs."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        models = [m.name for m in self.models]
        for section, names in (("models", models), ("targets", [t.name for t in self.targets])):
            for i, name in enumerate(names):
                if name in names[:i]:
                    problems.append(((section, i, "name"), f"duplicate name {name!r}"))
        targets = {t.name: t for t in self.targets}
        for i, t in enumerate(self.targets):
            if t.model not in models:
                problems.append((("targets", i, "model"), f"model {t.model!r} is not one of models {models}"))
            rule = t.pick.context
            if rule is not None:
                loc = ("targets", i, "pick", "context", "target")
                other = targets.get(rule.target)
                if other is None:
                    problems.append((loc, f"{rule.target!r} is not a target"))
                elif other.kind != "segmentation":
                    problems.append((loc, f"context target {rule.target!r} must have 'kind: segmentation'"))
                elif other.pick.context:
                    problems.append((loc, f"context target {rule.target!r} may not have context rules itself"))
        return problems


# --------------------------------------------------------------------------------------------- loading


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate YAML text as a :class:`RunConfig`; :class:`ConfigError` names key and line."""
    config, lines = parse_yaml_model(text, RunConfig, source, "inputs:, models:, targets:, ...")
    refs = config.reference_problems()
    if refs:
        raise ConfigError("; ".join(located(loc, msg, lines) for loc, msg in refs), source)
    if base_dir is not None:
        config = resolve_paths(config, base_dir)
    return config


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run configuration file; relative paths are taken from its directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", path) from exc
    return parse_config(text, str(path), base_dir=path.parent.resolve())


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    """A copy of ``config`` whose file paths are absolute (relative ones taken from ``base``)."""
    c = config.model_copy(deep=True)
    c.inputs.paths = [_resolve(p, base) for p in c.inputs.paths]  # type: ignore[misc]
    c.inputs.manifest = _resolve(c.inputs.manifest, base)
    c.inputs.truth = _resolve(c.inputs.truth, base)
    c.output.dir = _resolve(c.output.dir, base)  # type: ignore[assignment]
    if c.preprocess.filter.target != "default":
        c.preprocess.filter.target = _resolve(c.preprocess.filter.target, base)  # type: ignore[assignment]
    for m in c.models:
        if m.path not in SHIPPED_MODELS:
            m.path = _resolve(m.path, base)  # type: ignore[assignment]
    if c.cluster.scheduler and Path(base, c.cluster.scheduler).is_file():
        c.cluster.scheduler = _resolve(c.cluster.scheduler, base)
    return c
