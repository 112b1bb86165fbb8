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
    def store(self) -> Path:
        """The tomogram's OME-Zarr store in the run directory."""
        return Path(self.run_dir) / "tomograms" / f"{self.name}.ome.zarr"

    @property
    def table_dir(self) -> Path:
        return Path(self.run_dir) / "tables" / self.name


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
) -> dict[str, Any]:
    """The task that runs on a worker: time the stage, confine nested dask work, wrap failures.

    The inventory of every output (file sizes and hashes) is taken here, right after writing, so a
    later run can tell that the outputs are still exactly what this stage wrote.
    """
    t0 = time.perf_counter()
    try:
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

    ``records`` and ``plans`` may hold manifests already loaded and plans already made (e.g.
    during pre-flight checks), so outputs are not checked twice.
    """
    from distributed import as_completed

    force = tuple(force)
    progress = progress or ProgressSink()
    outcomes = {j.name: TomoOutcome(j.name) for j in jobs}
    queue = list(jobs)
    queue.reverse()  # pop() from the end keeps input order
    active: dict[str, dict[str, Any]] = {}  # tomo -> {"futures": {stage: fut}, "record": ..., "left": n}
    meta: dict[str, tuple[str, str, str]] = {}  # future key -> (tomo, stage, hash)
    ac = as_completed(with_results=False)
    counts = {"done": 0, "failed": 0}
    order = 0

    def window() -> int:
        return max_in_flight or max(2, 2 * _n_workers(client))

    def report(last: str = "") -> None:
        progress.update(counts["done"], counts["failed"], len(active), len(queue), last)

    def finish(name: str, ok: bool) -> None:
        out = outcomes[name]
        out.status = "done" if ok else "failed"
        counts["done" if ok else "failed"] += 1
        state = active.pop(name, None)
        if state:
            for fut in state["futures"].values():
                meta.pop(fut.key, None)
        report(f"{name} {'done' if ok else 'failed'}")

    def fail(name: str, stage: str, reason: str, details: str = "") -> None:
        state = active.get(name)
        if state is None:
            return
        for fut in state["futures"].values():
            if not fut.done():
                fut.cancel()
        rec: TomoManifest = state["record"]
        rec.failure = {"stage": stage, "reason": reason, "details": details[-4000:], "time": time.time()}
        manifest.save(rec)
        outcomes[name].failed_stage, outcomes[name].reason = stage, reason
        log.warning("%s failed in %s: %s", name, stage, reason)
        finish(name, False)

    def submit(job: TomoJob) -> None:
        nonlocal order
        rec = (records or {}).get(job.name) or manifest.load(job.name)
        steps = list((plans or {}).get(job.name) or plan_job(job, list(stages_for(job)), rec, force))
        out = outcomes[job.name]
        out.status = "running"
        out.skipped = [p.stage.name for p in steps if not p.run]
        out.ran = [p.stage.name for p in steps if p.run]
        if rec.failure is not None and not out.ran:
            rec.failure = None
            manifest.save(rec)
        if not out.ran:
            finish(job.name, True)
            return
        futures: dict[str, Any] = {}
        order += 1
        for depth, p in enumerate(steps):
            if not p.run:
                continue
            st = p.stage
            upstream = {d: futures[d] if d in futures else _recorded(rec, d) for d in st.deps}
            after = [futures[a] for a in st.after if a in futures]
            fut = client.submit(
                execute_stage,
                st.func,
                job,
                dict(st.params),
                st.name,
                upstream,
                after,
                key=f"{st.name}-{job.name}-{p.hash[:10]}",
                resources={"GPU": 1} if (st.gpu and use_gpu_resources) else None,
                retries=retries,
                pure=False,
                priority=depth - 10 * order,  # finish started tomograms before starting new ones
            )
            futures[st.name] = fut
            meta[fut.key] = (job.name, st.name, p.hash)
            ac.add(fut)
        active[job.name] = {"futures": futures, "record": rec, "left": len(futures)}
        report(f"{job.name} submitted ({', '.join(futures)})")

    def fill() -> None:
        while queue and len(active) < window():
            job = queue.pop()
            try:
                submit(job)
            except DeepictError as exc:
                outcomes[job.name].status = "running"
                active[job.name] = {"futures": {}, "record": manifest.load(job.name), "left": 0}
                fail(job.name, "plan", str(exc))

    progress.start(len(jobs), getattr(client, "dashboard_link", None))
    try:
        fill()
        while active or queue:
            if ac.is_empty():
                fill()
                if ac.is_empty():
                    break
            fut = next(ac)
            info = meta.get(fut.key)
            if info is None:  # belongs to a tomogram already failed/finished
                continue
            name, stage, stage_hash = info
            state = active[name]
            if fut.status == "finished":
                try:
                    result = fut.result()
                except Exception as exc:  # lost between status and gather: treat as failure
                    fail(name, stage, describe_exception(exc))
                    fill()
                    continue
                manifest.record(state["record"], stage, stage_hash, result)
                state["left"] -= 1
                if state["left"] == 0:
                    rec = state["record"]
                    if rec.failure is not None:
                        rec.failure = None
                        manifest.save(rec)
                    finish(name, True)
            elif fut.status == "error":
                exc = fut.exception()
                if isinstance(exc, StageFailure):
                    fail(name, exc.stage, exc.reason, exc.details)
                else:
                    fail(name, stage, describe_exception(exc))
            elif fut.status == "cancelled":
                fail(name, stage, "cancelled")
            fill()
    finally:
        progress.stop()
        for state in active.values():
            for fut in state["futures"].values():
                fut.cancel()
    for out in outcomes.values():
        if out.status == "pending":
            out.status, out.reason = "failed", "not started"
    return outcomes


def _recorded(rec: TomoManifest, stage: str) -> dict[str, Any]:
    r = rec.stages[stage]
    return {"outputs": r.outputs, "result": r.result, "seconds": r.seconds}

