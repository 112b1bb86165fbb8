"""Run per-tomogram stage chains on a Dask cluster: resumable, fault tolerant, bounded.

The engine knows nothing about tomography. It receives, per tomogram, a :class:`TomoJob` and an
ordered list of :class:`Stage` objects (each a plain function with JSON-able parameters and the
names of the stages it depends on) and

* hashes every stage (its parameters, version, the input file's fingerprint and the hashes of the
  stages it depends on), so a changed setting recomputes that stage and everything downstream;
* skips stages whose manifest record has the same hash and whose outputs are intact (every file the
  stage wrote present with its recorded size; re-hashed with ``verify``); a damaged output reruns
  its stage and everything downstream;
* submits the rest with ``client.submit`` -- one task per stage and tomogram, keys like
  ``predict:demo3d-TS_01-1a2b3c4d`` (the dashboard groups by stage and names the tomogram),
  GPU stages with ``resources={"GPU": 1}`` on the task itself (no graph optimization can drop it);
* keeps at most ``max_in_flight`` tomograms submitted (memory stays bounded, workers stay busy);
* records each finished stage as soon as it finishes (a killed client loses nothing finished), with
  the inventory of its outputs computed on the worker right after writing them;
* turns an exception in a stage into a failure of that tomogram only (its later stages are
  cancelled, every other tomogram goes on); a worker that dies is handled by the scheduler, which
  re-runs its tasks elsewhere (stages are deterministic and write atomically, so outputs are
  identical to an undisturbed run).

:class:`JobRunner` does this on a cluster (``run_jobs`` is its one-call form); :func:`run_here`
runs a small job's stages in this process with the same planning and records (the run-level
stages after all tomograms: combine, evaluate, report).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepict_dask.errors import DeepictError
from deepict_dask.io.checksum import inventory
from deepict_dask.layout import RunLayout, TomoStore
from deepict_dask.pipeline.manifest import Manifest, TomoManifest, hash_value, output_exists

log = logging.getLogger(__name__)

StageFunc = Callable[["TomoJob", Mapping[str, Any], Mapping[str, Mapping[str, Any]]], Mapping[str, Any]]


@dataclass(frozen=True)
class TomoJob:
    """One tomogram of the run, as handed to every stage function (must stay small and picklable)."""

    name: str
    source: str
    run_dir: str
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    header: Mapping[str, Any] = field(default_factory=dict)
    truth: str | None = None

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def tomo_store(self) -> TomoStore:
        """The tomogram's OME-Zarr store in the run directory, with its group names."""
        return self.layout.store(self.name)

    @property
    def store(self) -> Path:
        """The path of the tomogram's OME-Zarr store."""
        return self.tomo_store.path

    @property
    def table_dir(self) -> Path:
        return self.layout.tomo_tables(self.name)


@dataclass(frozen=True)
class Stage:
    """One step of a tomogram's chain.

    ``func(job, params, upstream)`` runs on a worker; ``upstream`` maps each dependency's name to
    its result. It returns ``{"outputs": [paths written], "result": {small JSON-able summary}}``.
    Bump ``version`` when the function's behaviour changes so old records are not trusted.
    """

    name: str
    func: StageFunc
    params: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    gpu: bool = False
    version: str = "1"
    after: tuple[str, ...] = ()  # ordering only (e.g. two writers of one store): not hashed, not upstream

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]


class StageFailure(Exception):
    """Raised on the worker when a stage fails; names the stage so dependents report the origin."""

    def __init__(self, stage: str, tomo: str, reason: str, details: str = ""):
        super().__init__(f"{tomo}: {stage}: {reason}")
        self.stage, self.tomo, self.reason, self.details = stage, tomo, reason, details

    def __reduce__(self) -> tuple[Any, ...]:
        return (StageFailure, (self.stage, self.tomo, self.reason, self.details))


def describe_exception(exc: BaseException) -> str:
    """One line: the message for user errors, ``Type: message`` otherwise."""
    if isinstance(exc, DeepictError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _inner_scheduler() -> dict[str, Any]:
    """Dask settings for graphs computed *inside* a stage task: the worker's own threads.

    Without this, ``dask.compute`` inside a task would find the worker's client and submit nested
    tasks to the cluster, which can deadlock single-threaded workers.
    """
    nthreads = 1
    try:
        from distributed import get_worker

        nthreads = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        nthreads = 1
    if nthreads == 1:
        return {"scheduler": "synchronous"}
    return {"scheduler": "threads", "num_workers": nthreads}


@contextlib.contextmanager
def local_dask() -> Iterator[dict[str, Any]]:
    """Inside a task: compute nested dask graphs on this worker's own threads (see ``_inner_scheduler``)."""
    import dask

    settings = _inner_scheduler()
    with dask.config.set(settings):
        torch = sys.modules.get("torch")  # never import it here: stages that need it do
        if torch is not None:
            torch.set_num_threads(settings.get("num_workers", 1))
        yield settings


def execute_stage(
    func: StageFunc,
    job: TomoJob,
    params: Mapping[str, Any],
    stage: str,
    upstream: Mapping[str, Any],
    after: Sequence[Any] = (),
    extensions: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The task that runs on a worker: time the stage, confine nested dask work, wrap failures.

    The inventory of every output (file sizes and hashes) is taken here, right after writing, so a
    later run can tell that the outputs are still exactly what this stage wrote. ``extensions``: the
    table formats and clustering methods the client registered at run time, which a worker process
    would not know otherwise (:func:`deepict_dask.plugins.runtime_extensions`).
    """
    t0 = time.perf_counter()
    try:
        if extensions:
            from deepict_dask.plugins import install_extensions

            install_extensions(extensions)
        with local_dask():
            out = dict(func(job, params, upstream) or {})
        out["outputs"] = [str(o) for o in out.get("outputs", [])]
        out["inventory"] = {o: inventory(o) for o in out["outputs"]}
    except StageFailure:
        raise
    except Exception as exc:  # any error of one tomogram becomes a reported failure of that tomogram
        raise StageFailure(stage, job.name, describe_exception(exc), traceback.format_exc()) from None
    out.setdefault("result", {})
    out["seconds"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------- planning


@dataclass
class StagePlan:
    stage: Stage
    hash: str
    run: bool
    reason: str  # "done" | "new" | "changed" | "forced" | "missing output" | "damaged output" | "upstream"
    detail: str = ""  # what is wrong with a missing or damaged output

def stage_hashes(job: TomoJob, stages: Sequence[Stage]) -> dict[str, str]:
    """Hash of every stage: its version and parameters, the input fingerprint and its dependencies."""
    hashes: dict[str, str] = {}
    for st in stages:
        missing = [d for d in st.deps if d not in hashes]
        if missing:
            raise ValueError(f"stage {st.name} depends on {missing}, which come later or not at all")
        hashes[st.name] = hash_value(
            {
                "stage": st.name,
                "version": st.version,
                "params": st.params,
                "input": None if st.deps else dict(job.fingerprint),
                "deps": [hashes[d] for d in st.deps],
            }
        )
    return hashes


def force_matches(stage: str, force: Iterable[str]) -> bool:
    """``--force predict`` matches every ``predict:<model>``; ``--force predict:demo3d`` one; ``all`` all."""
    kind = stage.split(":", 1)[0]
    return any(f in ("all", stage, kind) for f in force)


def plan_job(
    job: TomoJob, stages: Sequence[Stage], record: TomoManifest, force: Iterable[str] = (), *, verify: bool = False
) -> list[StagePlan]:
    """Decide which stages of one tomogram must run (a stage runs when any dependency runs).

    A stage whose outputs are damaged runs again; ``verify`` re-hashes them instead of the cheap
    size check.
    """
    force = tuple(force)
    hashes = stage_hashes(job, stages)
    plans: dict[str, StagePlan] = {}
    for st in stages:
        h = hashes[st.name]
        rec = record.stages.get(st.name)
        detail = ""
        if force_matches(st.name, force):
            reason = "forced"
        elif any(plans[d].run for d in st.deps):
            reason = "upstream"
        elif rec is None:
            reason = "new"
        elif rec.hash != h:
            reason = "changed"
        else:
            detail = record.damage(st.name, deep=verify) or ""
            intact = all(output_exists(o) for o in rec.outputs)
            reason = "done" if not detail else "missing output" if not intact else "damaged output"
        plans[st.name] = StagePlan(st, h, reason != "done", reason, detail)
    return list(plans.values())


# ------------------------------------------------------------------------------------------ execution


@dataclass
class TomoOutcome:
    name: str
    status: str = "pending"  # pending | running | done | failed
    failed_stage: str | None = None
    reason: str | None = None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class ProgressSink:
    """Receives progress events; the CLI shows them with rich, tests ignore them."""

    def start(self, total: int, dashboard: str | None) -> None:
        """Called once before the first submission."""

    def update(self, done: int, failed: int, running: int, queued: int, last: str = "") -> None:
        """Called whenever a tomogram starts, finishes or fails."""

    def stop(self) -> None:
        """Called once at the end."""


def _workers(client: Any) -> dict[str, Any]:
    try:
        return dict(client.scheduler_info().get("workers", {}))
    except Exception:  # a scheduler that cannot answer right now
        return {}


def gpu_available(client: Any) -> bool:
    """Whether any connected worker advertises a ``GPU`` resource."""
    return any((w.get("resources") or {}).get("GPU", 0) > 0 for w in _workers(client).values())


def _n_workers(client: Any) -> int:
    return max(1, len(_workers(client)))


class JobRunner:
    """Runs tomograms' stage chains on a Dask client, a bounded number of tomograms at a time.

    One instance per run: :meth:`run` feeds the queue, :meth:`submit` plans (once per tomogram:
    plans made before, e.g. by the pre-flight checks, are used as they are) and submits a
    tomogram's stages, :meth:`on_done` records each finished stage at once, :meth:`on_failure`
    cancels the rest of that tomogram and records why.
    """

    def __init__(
        self,
        client: Any,
        manifest: Manifest,
        stages_for: Callable[[TomoJob], Sequence[Stage]] | None = None,
        *,
        force: Iterable[str] = (),
        max_in_flight: int | None = None,
        use_gpu_resources: bool = False,
        retries: int = 1,
        progress: ProgressSink | None = None,
        records: Mapping[str, TomoManifest] | None = None,
        plans: Mapping[str, Sequence[StagePlan]] | None = None,
    ):
        from distributed import as_completed

        from deepict_dask.plugins import runtime_extensions

        self.client, self.manifest, self.stages_for = client, manifest, stages_for
        self.extensions = runtime_extensions()  # registered in this process only: workers get them with each stage
        self.force = tuple(force)
        self.max_in_flight, self.use_gpu_resources, self.retries = max_in_flight, use_gpu_resources, retries
        self.progress = progress or ProgressSink()
        self.records: dict[str, TomoManifest] = dict(records or {})
        self.plans: dict[str, list[StagePlan]] = {k: list(v) for k, v in (plans or {}).items()}
        self.outcomes: dict[str, TomoOutcome] = {}
        self.queue: list[TomoJob] = []
        self.active: dict[str, dict[str, Any]] = {}  # tomo -> {"futures": {stage: fut}, "record": ..., "left": n}
        self.meta: dict[str, tuple[str, str, str]] = {}  # future key -> (tomo, stage, hash)
        self.completed = as_completed(with_results=False)
        self.counts = {"done": 0, "failed": 0}
        self.order = 0

    # ---- bookkeeping

    def window(self) -> int:
        """How many tomograms may be submitted at once (default two per worker)."""
        return self.max_in_flight or max(2, 2 * _n_workers(self.client))

    def report(self, last: str = "") -> None:
        self.progress.update(self.counts["done"], self.counts["failed"], len(self.active), len(self.queue), last)

    def record_of(self, job: TomoJob) -> TomoManifest:
        if job.name not in self.records:
            self.records[job.name] = self.manifest.load(job.name)
        return self.records[job.name]

    def plan(self, job: TomoJob) -> list[StagePlan]:
        """The tomogram's plan, made at most once."""
        if job.name not in self.plans:
            if self.stages_for is None:
                raise ValueError(f"no plan and no stage list for {job.name}")
            self.plans[job.name] = plan_job(job, list(self.stages_for(job)), self.record_of(job), self.force)
        return self.plans[job.name]

    def finish(self, name: str, ok: bool) -> None:
        out = self.outcomes[name]
        out.status = "done" if ok else "failed"
        self.counts["done" if ok else "failed"] += 1
        state = self.active.pop(name, None)
        if state:
            for fut in state["futures"].values():
                self.meta.pop(fut.key, None)
        self.report(f"{name} {'done' if ok else 'failed'}")

    # ---- events

    def on_failure(self, name: str, stage: str, reason: str, details: str = "") -> None:
        """Cancel the tomogram's other stages and record the failure in its manifest."""
        state = self.active.get(name)
        if state is None:
            return
        for fut in state["futures"].values():
            if not fut.done():
                fut.cancel()
        rec: TomoManifest = state["record"]
        rec.failure = {"stage": stage, "reason": reason, "details": details[-4000:], "time": time.time()}
        self.manifest.save(rec)
        self.outcomes[name].failed_stage, self.outcomes[name].reason = stage, reason
        log.warning("%s failed in %s: %s", name, stage, reason)
        self.finish(name, False)

    def on_done(self, fut: Any) -> None:
        """A task ended: record its stage, or fail its tomogram."""
        info = self.meta.get(fut.key)
        if info is None:  # belongs to a tomogram already failed/finished
            return
        name, stage, stage_hash = info
        state = self.active[name]
        if fut.status == "finished":
            try:
                result = fut.result()
            except Exception as exc:  # lost between status and gather: treat as failure
                self.on_failure(name, stage, describe_exception(exc))
                return
            self.manifest.record(state["record"], stage, stage_hash, result)
            state["left"] -= 1
            if state["left"] == 0:
                clear_failure(self.manifest, state["record"])
                self.finish(name, True)
        elif fut.status == "error":
            exc = fut.exception()
            if isinstance(exc, StageFailure):
                self.on_failure(name, exc.stage, exc.reason, exc.details)
            else:
                self.on_failure(name, stage, describe_exception(exc))
        elif fut.status == "cancelled":
            self.on_failure(name, stage, "cancelled")

    # ---- submission

    def submit(self, job: TomoJob) -> None:
        """Submit the stages of ``job`` that must run (a tomogram with none is done at once)."""
        rec = self.record_of(job)
        steps = self.plan(job)
        out = self.outcomes[job.name]
        out.status = "running"
        out.skipped = [p.stage.name for p in steps if not p.run]
        out.ran = [p.stage.name for p in steps if p.run]
        if not out.ran:
            clear_failure(self.manifest, rec)
            self.finish(job.name, True)
            return
        futures: dict[str, Any] = {}
        self.order += 1
        for depth, p in enumerate(steps):
            if not p.run:
                continue
            st = p.stage
            upstream = {d: futures[d] if d in futures else _recorded(rec, d) for d in st.deps}
            after = [futures[a] for a in st.after if a in futures]
            fut = self.client.submit(
                execute_stage, st.func, job, dict(st.params), st.name, upstream, after, self.extensions,
                key=f"{st.name}-{job.name}-{p.hash[:10]}",
                resources={"GPU": 1} if (st.gpu and self.use_gpu_resources) else None,
                retries=self.retries,
                pure=False,
                priority=depth - 10 * self.order,  # finish started tomograms before starting new ones
            )
            futures[st.name] = fut
            self.meta[fut.key] = (job.name, st.name, p.hash)
            self.completed.add(fut)
        self.active[job.name] = {"futures": futures, "record": rec, "left": len(futures)}
        self.report(f"{job.name} submitted ({', '.join(futures)})")

    def fill(self) -> None:
        """Submit queued tomograms while fewer than :meth:`window` are in flight."""
        while self.queue and len(self.active) < self.window():
            job = self.queue.pop()
            try:
                self.submit(job)
            except DeepictError as exc:
                self.outcomes[job.name].status = "running"
                self.active[job.name] = {"futures": {}, "record": self.record_of(job), "left": 0}
                self.on_failure(job.name, "plan", str(exc))

    def run(self, jobs: Sequence[TomoJob]) -> dict[str, TomoOutcome]:
        """Run every job's chain; returns the outcome per tomogram (in ``jobs`` order)."""
        self.outcomes = {j.name: TomoOutcome(j.name) for j in jobs}
        self.queue = list(reversed(jobs))  # pop() from the end keeps input order
        self.progress.start(len(jobs), getattr(self.client, "dashboard_link", None))
        try:
            self.fill()
            while self.active or self.queue:
                if self.completed.is_empty():
                    self.fill()
                    if self.completed.is_empty():
                        break
                self.on_done(next(self.completed))
                self.fill()
        finally:
            self.progress.stop()
            for state in self.active.values():
                for fut in state["futures"].values():
                    fut.cancel()
        for out in self.outcomes.values():
            if out.status == "pending":
                out.status, out.reason = "failed", "not started"
        return self.outcomes


def run_jobs(
    client: Any,
    jobs: Sequence[TomoJob],
    stages_for: Callable[[TomoJob], Sequence[Stage]],
    manifest: Manifest,
    *,
    force: Iterable[str] = (),
    max_in_flight: int | None = None,
    use_gpu_resources: bool = False,
    retries: int = 1,
    progress: ProgressSink | None = None,
    records: Mapping[str, TomoManifest] | None = None,
    plans: Mapping[str, Sequence[StagePlan]] | None = None,
) -> dict[str, TomoOutcome]:
    """Run every job's stage chain on ``client``; returns the outcome per tomogram.

    Parameters
    ----------
    client
        A ``distributed.Client``.
    jobs
        The tomograms, in the order they are started.
    stages_for
        The stage list of a tomogram (called once per tomogram, only for those without a plan).
    manifest
        Where finished stages and failures are recorded.
    force, max_in_flight, use_gpu_resources, retries, progress
        Stages to recompute; tomograms submitted at once; ask for ``GPU`` worker resources for GPU
        stages; task retries (lost workers); progress events.
    records, plans
        Manifests already loaded and plans already made (e.g. by the pre-flight checks), so outputs
        are not checked twice.

    Returns
    -------
    dict
        Tomogram name -> :class:`TomoOutcome`.
    """
    runner = JobRunner(client, manifest, stages_for, force=force, max_in_flight=max_in_flight,
                       use_gpu_resources=use_gpu_resources, retries=retries, progress=progress, records=records,
                       plans=plans)
    return runner.run(jobs)


def run_here(job: TomoJob, plans: Sequence[StagePlan], manifest: Manifest) -> TomoOutcome:
    """Run one job's stages in this process, one after another (the run-level stages: small, local).

    They are planned, hashed, skipped, inventoried and recorded exactly as the stages of a tomogram;
    the first failure stops the chain and is recorded in the job's manifest.
    """
    rec = manifest.load(job.name)
    out = TomoOutcome(job.name, "running", ran=[p.stage.name for p in plans if p.run],
                      skipped=[p.stage.name for p in plans if not p.run])
    results: dict[str, Any] = {}
    for p in plans:
        if not p.run:
            continue
        st = p.stage
        upstream = {d: results[d] if d in results else _recorded(rec, d) for d in st.deps}
        try:
            results[st.name] = execute_stage(st.func, job, dict(st.params), st.name, upstream)
        except StageFailure as exc:
            rec.failure = {"stage": exc.stage, "reason": exc.reason, "details": exc.details[-4000:], "time": time.time()}
            manifest.save(rec)
            out.status, out.failed_stage, out.reason = "failed", exc.stage, exc.reason
            log.warning("%s failed: %s", exc.stage, exc.reason)
            return out
        manifest.record(rec, st.name, p.hash, results[st.name])
    clear_failure(manifest, rec)
    out.status = "done"
    return out


def clear_failure(manifest: Manifest, rec: TomoManifest) -> None:
    """Forget an earlier failure of a tomogram that is now complete."""
    if rec.failure is not None:
        rec.failure = None
        manifest.save(rec)


def _recorded(rec: TomoManifest, stage: str) -> dict[str, Any]:
    r = rec.stages[stage]
    return {"outputs": r.outputs, "result": r.result, "seconds": r.seconds}

