"""``deepict run``: the whole workflow over many tomograms on a Dask cluster.

:func:`run_workflow` checks everything cheap first (config references, inputs, headers, voxel
sizes, models and their classes, the output directory), then starts or connects to the cluster,
runs every tomogram's stage chain with the engine (resumable, fault tolerant, bounded) and writes
the run-level outputs (combined tables, summary, provenance, evaluation, report).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepict_dask.cluster import ClusterSpec, dask_client
from deepict_dask.errors import ConfigError, InputError, OutputError
from deepict_dask.io.checksum import file_sha256
from deepict_dask.layout import RUN_RECORD, RunLayout, is_temporary
from deepict_dask.pipeline.config import SHIPPED_MODELS, RunConfig
from deepict_dask.pipeline.engine import (
    JobRunner,
    ProgressSink,
    StagePlan,
    TomoJob,
    TomoOutcome,
    clear_failure,
    gpu_available,
    plan_job,
)
from deepict_dask.pipeline.inputs import InputTomogram, check_output_dir, collect_inputs
from deepict_dask.pipeline.lock import LOCK_NAME as LOCK_NAME  # the tests and callers import it from here
from deepict_dask.pipeline.lock import run_lock
from deepict_dask.pipeline.manifest import Manifest, TomoManifest
from deepict_dask.pipeline.run_stages import RUN_STAGE_KINDS
from deepict_dask.pipeline.stages import STAGE_KINDS, build_stages, model_files, read_model_meta

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    outcomes: dict[str, TomoOutcome]
    outputs: dict[str, Path] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)  # one line per damaged output recomputed
    run_stages: TomoOutcome | None = None  # combine, evaluate, report

    @property
    def failed(self) -> list[TomoOutcome]:
        return [o for o in self.outcomes.values() if o.status != "done"]

    @property
    def exit_code(self) -> int:
        run_failed = self.run_stages is not None and self.run_stages.status == "failed"
        return 1 if self.failed or run_failed else 0


def cluster_spec(config: RunConfig, override: ClusterSpec | None = None) -> ClusterSpec:
    """The cluster from the config's ``cluster:`` section, with command-line options on top."""
    c = config.cluster
    spec = ClusterSpec(
        kind=c.kind, scheduler=c.scheduler, n_workers=c.workers, threads_per_worker=c.threads_per_worker,
        memory_limit=c.memory_limit, jobs=c.jobs, jobqueue_options=dict(c.jobqueue),
        dashboard_address=c.dashboard, worker_wait=c.worker_wait,
    )
    if override is not None:
        if override.kind != "local" or override.scheduler:
            spec.kind, spec.scheduler = override.kind, override.scheduler
        for name in ("n_workers", "threads_per_worker", "memory_limit", "dashboard_address"):
            if getattr(override, name) is not None:
                setattr(spec, name, getattr(override, name))
        if override.jobs and override.jobs != 1:
            spec.jobs = override.jobs
    return spec


def remove_stale_temporaries(run_dir: Path, names: Iterable[str]) -> int:
    """Delete ``.X.tmp-*`` / ``.old-*`` / ``.scratch-*`` leftovers of killed writers (the directory is locked)."""
    from deepict_dask.io.atomic import remove_path

    n = 0
    for d in RunLayout(run_dir).temporary_dirs(names):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if is_temporary(e.name):
                remove_path(Path(e.path))
                n += 1
    return n


def check_run_dir(run_dir: Path, *, overwrite: bool = False) -> None:
    """Refuse a non-empty folder that is not a run directory: the run would replace its files."""
    if overwrite or not run_dir.is_dir() or RunLayout(run_dir).is_run_dir():
        return
    with os.scandir(run_dir) as it:
        if next(it, None) is None:
            return
    raise OutputError("output.dir is not empty and is not a deepict run directory (its files could be "
                      "replaced); choose a new or empty folder, or pass overwrite (--overwrite)", run_dir)


def plan_jobs(jobs: Sequence[TomoJob], stages_for: Any, records: dict[str, TomoManifest], force: list[str],
              verify: bool) -> dict[str, list[StagePlan]]:
    """Every tomogram's plan, made once: output checks (stat, or re-hash with ``verify``) run once."""
    return {j.name: plan_job(j, stages_for(j), records[j.name], force, verify=verify) for j in jobs}


def damage_lines(plans: dict[str, list[StagePlan]]) -> list[str]:
    """One line per missing or damaged output: which stage is recomputed and why."""
    return [f"{name}: {p.stage.name} is recomputed with everything after it: {p.detail}"
            for name, steps in plans.items() for p in steps if p.reason in ("missing output", "damaged output")]


def check_models(config: RunConfig, tomos: list[InputTomogram]) -> dict[str, str]:
    """Every model file readable, every target's class in its model, voxel sizes compatible.

    Returns the SHA-256 of each model file (part of the prediction stage's hash, and provenance).
    """
    files = model_files(config)
    problems: list[str] = []
    infos = {}
    hashes = {}
    for m in config.models:
        try:
            if not files[m.name].is_file():
                raise InputError("model file not found" + (" (shipped demo model missing from the installation)"
                                                           if m.path in SHIPPED_MODELS else ""), files[m.name])
            infos[m.name] = read_model_meta(files[m.name])
            if infos[m.name].get("task", "segmentation") != "segmentation":
                from deepict_dask.models.spec import ModelInfo, require_segmentation

                require_segmentation(ModelInfo.model_validate(infos[m.name]), files[m.name])
            hashes[m.name] = file_sha256(files[m.name])
        except (InputError, OSError) as exc:
            problems.append(f"models: {m.name}: {exc}")
    for t in config.targets:
        info = infos.get(t.model)
        if info is not None and t.model_class not in info["classes"]:
            problems.append(
                f"targets: {t.name}: model {t.model!r} has no class {t.model_class!r} (it has {info['classes']}); "
                "set 'class:'"
            )
    flt = config.preprocess.filter
    if flt.enabled and flt.target != "default":
        from deepict_dask.preprocess import read_spectrum

        try:
            read_spectrum(flt.target)
        except InputError as exc:
            problems.append(f"preprocess.filter.target: {exc}")
    readable = [t for t in tomos if t.problem is None]
    if readable:
        vs = readable[0].header["voxel_size"]
        for name, info in infos.items():
            model_vs = float(info["voxel_size"])
            if max(abs(float(v) - model_vs) / model_vs for v in vs) <= float(info["voxel_size_tolerance"]):
                continue
            from deepict_dask.models import ModelInfo, check_voxel_size  # imports torch: only on a mismatch

            try:
                check_voxel_size(ModelInfo.model_validate(info), vs)
            except Exception as exc:  # DeepictError with the model's own wording
                problems.append(f"models: {name}: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))
    return hashes


def make_jobs(tomos: list[InputTomogram], run_dir: Path) -> list[TomoJob]:
    return [
        TomoJob(t.name, str(t.path), str(run_dir), fingerprint=t.fingerprint, header=t.header,
                truth=str(t.truth) if t.truth else None)
        for t in tomos
    ]


def check_force(force: Iterable[str], config: RunConfig) -> list[str]:
    valid = set(STAGE_KINDS) | set(RUN_STAGE_KINDS) | {"all"} | {f"predict:{m.name}" for m in config.models} | {
        f"pick:{t.name}" for t in config.targets}
    bad = [f for f in force if f not in valid]
    if bad:
        raise ConfigError(f"force (--force) {', '.join(bad)}: unknown stage; use one of {sorted(valid)}")
    return list(force)


def run_workflow(
    config: RunConfig,
    *,
    force: Iterable[str] = (),
    cluster: ClusterSpec | None = None,
    client: Any = None,
    progress: ProgressSink | None = None,
    evaluate: bool = True,
    verify: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Run the configured workflow; returns per-tomogram outcomes and the run-level outputs.

    Every tomogram's stage list is built and planned once; tomograms with work left go to the
    cluster (none is started when all are up to date). Then the run-level stages (combine,
    evaluate, report) run here, planned and recorded the same way.

    Parameters
    ----------
    config
        The run configuration (``output.dir`` is the run directory).
    force
        Stages to recompute with everything after them: a kind (``predict``), one stage
        (``predict:demo3d``), a run-level stage (``report``) or ``all``.
    cluster
        Overrides of ``config.cluster`` (command-line options).
    client
        An existing Dask client to use (tests, notebooks) instead of starting a cluster.
    progress
        Receives progress events (the CLI's live display).
    evaluate
        Evaluate against ``inputs.truth`` where given.
    verify
        Re-hash every finished output before trusting it (default: file sizes only); a damaged one
        is recomputed with everything downstream.
    overwrite
        Allow an ``output.dir`` that holds other files.

    Returns
    -------
    RunResult
        Per-tomogram outcomes, the run-level stages' outcome, output paths, evaluation metrics.
    """
    from deepict_dask.pipeline.summary import write_run_outputs

    t0 = time.perf_counter()
    force = check_force(force, config)
    run_dir = Path(config.output.dir)
    check_run_dir(run_dir, overwrite=overwrite)
    # every read-only check before the folder is made: a refused run (bad model, voxel sizes) leaves nothing
    tomos = collect_inputs(config, Manifest(run_dir))
    model_hashes = check_models(config, tomos)
    check_output_dir(run_dir)
    with run_lock(run_dir):
        manifest = Manifest(run_dir)
        remove_stale_temporaries(run_dir, [t.name for t in tomos])
        _save_headers(manifest, tomos)
        jobs = make_jobs([t for t in tomos if t.problem is None], run_dir)
        records = {j.name: manifest.load(j.name) for j in jobs}
        plans = plan_jobs(jobs, lambda job: build_stages(config, job), records, force, verify)  # the only planning
        repaired = damage_lines(plans)
        for line in repaired:
            log.warning("%s", line)

        def execute(c: Any) -> dict[str, TomoOutcome]:
            adapt = config.cluster.adapt
            if adapt is not None and config.cluster.kind in ("slurm", "pbs", "sge") and getattr(c, "cluster", None):
                c.cluster.adapt(minimum_jobs=adapt.minimum, maximum_jobs=adapt.maximum)
            gpu = config.execution.gpu == "yes" or (config.execution.gpu == "auto" and gpu_available(c))
            runner = JobRunner(c, manifest, force=force, max_in_flight=config.execution.max_in_flight,
                               use_gpu_resources=gpu, retries=config.execution.retries, progress=progress,
                               records=records, plans=plans)
            return runner.run(jobs)

        outcomes = known_outcomes(tomos, plans)
        pending = [j for j in jobs if j.name not in outcomes]
        for j in jobs:
            if j not in pending:  # up to date: no cluster needed for it
                clear_failure(manifest, records[j.name])
        jobs = pending
        if jobs:
            if client is not None:
                outcomes.update(execute(client))
            else:
                with dask_client(cluster_spec(config, cluster), quiet=progress is not None) as c:
                    outcomes.update(execute(c))
        ordered = {t.name: outcomes[t.name] for t in tomos}
        result = RunResult(run_dir, ordered, repaired=repaired)
        write_run_outputs(result, config, tomos, manifest, model_hashes, evaluate=evaluate, force=force,
                          verify=verify, records=records)
    result.seconds = time.perf_counter() - t0
    return result


def known_outcomes(tomos: Sequence[InputTomogram], plans: Mapping[str, Sequence[StagePlan]]) -> dict[str, TomoOutcome]:
    """The outcomes known before any work: unreadable tomograms failed, those with nothing to run done."""
    outcomes = {}
    for t in tomos:
        if t.problem is not None:
            outcomes[t.name] = TomoOutcome(t.name, "failed", "read", t.problem)
        elif t.name in plans and not any(p.run for p in plans[t.name]):
            outcomes[t.name] = TomoOutcome(t.name, "done", skipped=[p.stage.name for p in plans[t.name]])
    return outcomes


def run_level_plan(config: RunConfig, run_dir: Path, tomos: Sequence[InputTomogram], manifest: Manifest,
                   plans: Mapping[str, Sequence[StagePlan]], force: Iterable[str] = (),
                   verify: bool = False) -> list[tuple[str, str]]:
    """``(stage, reason)`` of the run-level stages (combine, evaluate, report) a run would do now: planned
    exactly when no tomogram has work left (their inputs are what is recorded), else ``after tomograms``
    (what they read is only known once the tomograms' stages have run)."""
    from deepict_dask.pipeline.run_stages import build_run_stages, run_job
    from deepict_dask.pipeline.summary import summary_rows

    outcomes = known_outcomes(tomos, plans)
    records = {t.name: manifest.load(t.name) for t in tomos}
    if len(outcomes) < len(tomos):
        stages = build_run_stages(config, RunLayout(run_dir), tomos, list(plans), records, [])
        return [(st.name, "after tomograms") for st in stages]
    rows = summary_rows(RunResult(run_dir, outcomes), records)
    done = [n for n, o in outcomes.items() if o.status == "done"]
    stages = build_run_stages(config, RunLayout(run_dir), tomos, done, records, rows)
    return [(p.stage.name, p.reason) for p in plan_job(run_job(run_dir), stages, manifest.load(RUN_RECORD),
                                                        force, verify=verify)]


def _save_headers(manifest: Manifest, tomos: list[InputTomogram]) -> None:
    for t in tomos:
        if t.problem is not None:
            continue
        rec = manifest.load(t.name)
        if rec.header != t.header or rec.source != str(t.path):
            rec.header, rec.source = dict(t.header), str(t.path)
            manifest.save(rec)


def dry_run(config: RunConfig, *, force: Iterable[str] = (), console: Any = None, verify: bool = False,
            overwrite: bool = False) -> dict[str, list[tuple[str, str]]]:
    """Check everything cheap and report, per tomogram, which stages would run and why.

    Parameters
    ----------
    config : RunConfig
        The run configuration.
    force : iterable of str
        Stages to recompute, as for :func:`run_workflow`.
    console : rich.console.Console, optional
        Where to print the plan (nothing is printed without one).
    verify : bool
        Re-hash finished outputs (default: file sizes only).
    overwrite : bool
        Allow an ``output.dir`` that holds other files.

    Returns
    -------
    dict
        Tomogram name -> ``(stage, reason)`` per stage (``"done"`` for a stage that would be skipped).
    """
    from collections import Counter

    force = check_force(force, config)
    run_dir = Path(config.output.dir)
    check_run_dir(run_dir, overwrite=overwrite)
    manifest = Manifest(run_dir)
    tomos = collect_inputs(config, manifest)
    check_models(config, tomos)
    check_output_dir(run_dir)
    plans: dict[str, list[tuple[str, str]]] = {}
    jobs = make_jobs([t for t in tomos if t.problem is None], run_dir)
    steps_of = plan_jobs(jobs, lambda j: build_stages(config, j),
                         {j.name: manifest.load(j.name) for j in jobs}, force, verify)
    for name, steps in steps_of.items():
        plans[name] = [(p.stage.name, p.reason) for p in steps]
    if console is not None:
        reasons = Counter(r for steps in plans.values() for _, r in steps)
        console.print(f"{len(tomos)} tomograms, {len(plans)} readable; stages: "
                      + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())))
        for t in tomos:
            if t.problem:
                console.print(f"  [red]unreadable[/] {t.name}: {t.problem}")
        for line in damage_lines(steps_of):
            console.print(f"  [yellow]damaged[/] {line}", markup=True, highlight=False)
        for name, steps in plans.items():
            todo = [f"{s} ({r})" for s, r in steps if r != "done"]
            console.print(f"  {name}: {', '.join(todo) if todo else 'up to date'}")
        todo = [f"{s} ({r})" for s, r in run_level_plan(config, run_dir, tomos, manifest, steps_of, force, verify)
                if r != "done"]
        console.print(f"  run-level stages: {', '.join(todo) if todo else 'up to date'}")
    return plans
