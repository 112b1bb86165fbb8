"""JobRunner with a fake stage list: retries, recorded failures, the in-flight bound, one plan per tomogram."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cloudpickle
import distributed
import pytest

from deepict_dask.pipeline.engine import JobRunner, ProgressSink, Stage, TomoJob, plan_job, run_here
from deepict_dask.pipeline.manifest import Manifest

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def st_write(job, params, upstream):
    """Writes one file; fails the first ``fail_times`` calls of a tomogram (counted in a file)."""
    calls = Path(job.run_dir) / f"{job.name}.calls"
    n = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(n))
    if n <= params.get("fail_times", 0):
        raise RuntimeError(f"flaky call {n}")
    time.sleep(params.get("sleep", 0))
    out = Path(job.run_dir) / f"{job.name}.out"
    out.write_text(str(params["value"]))
    return {"outputs": [out], "result": {"calls": n}}


def st_next(job, params, upstream):
    out = Path(job.run_dir) / f"{job.name}.next"
    out.write_text(Path(upstream["write"]["outputs"][0]).read_text() + "+")
    return {"outputs": [out]}


class Counting:
    """A stage list factory that counts how often each tomogram's list is built."""

    def __init__(self, **params):
        self.params, self.calls = params, {}

    def __call__(self, job):
        self.calls[job.name] = self.calls.get(job.name, 0) + 1
        return [Stage("write", st_write, {"value": 1, **self.params}),
                Stage("next", st_next, deps=("write",))]


class MaxRunning(ProgressSink):
    def __init__(self):
        self.max_running = 0

    def update(self, done, failed, running, queued, last=""):
        self.max_running = max(self.max_running, running)


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def jobs(run: Path, n: int) -> list[TomoJob]:
    run.mkdir(parents=True, exist_ok=True)
    return [TomoJob(f"t{i}", "", str(run), fingerprint={"i": i}) for i in range(n)]


def test_retry_recovers_a_flaky_stage_and_the_plan_is_built_once_per_tomogram(tmp_path, client):
    stages = Counting(fail_times=1)
    runner = JobRunner(client, Manifest(tmp_path), stages, retries=1)
    out = runner.run(jobs(tmp_path, 3))
    assert all(o.status == "done" for o in out.values()), out
    assert stages.calls == {"t0": 1, "t1": 1, "t2": 1}
    assert Manifest(tmp_path).load("t1").stages["write"].result["calls"] == 2


def test_failure_without_retries_is_recorded_and_others_finish(tmp_path, client):
    man = Manifest(tmp_path)
    js = jobs(tmp_path, 2)
    (tmp_path / "t0.calls").write_text("0")
    (tmp_path / "t1.calls").write_text("5")  # t1 already past its failing calls
    out = JobRunner(client, man, Counting(fail_times=1), retries=0).run(js)
    assert out["t0"].status == "failed" and out["t0"].failed_stage == "write"
    assert "flaky call 1" in out["t0"].reason
    assert man.load("t0").failure["stage"] == "write" and "next" not in man.load("t0").stages
    assert out["t1"].status == "done" and man.load("t1").failure is None
    # the next run retries the failed tomogram only, and clears its failure
    out = JobRunner(client, man, Counting(fail_times=1), retries=0).run(js)
    assert out["t0"].ran == ["write", "next"] and out["t1"].ran == []
    assert man.load("t0").failure is None


def test_max_in_flight_is_respected(tmp_path, client):
    sink = MaxRunning()
    out = JobRunner(client, Manifest(tmp_path), Counting(sleep=0.05), max_in_flight=1, progress=sink).run(
        jobs(tmp_path, 4))
    assert all(o.status == "done" for o in out.values())
    assert sink.max_running == 1


def test_plans_given_are_used_as_they_are(tmp_path, client):
    man = Manifest(tmp_path)
    js = jobs(tmp_path, 2)
    stages = Counting()
    plans = {j.name: plan_job(j, stages(j), man.load(j.name)) for j in js}
    JobRunner(client, man, stages, plans=plans).run(js)
    assert stages.calls == {"t0": 1, "t1": 1}


def test_run_here_records_skips_and_stops_at_a_failure(tmp_path):
    man = Manifest(tmp_path)
    job = TomoJob(".run", "", str(tmp_path))
    stages = Counting()(job)
    first = run_here(job, plan_job(job, stages, man.load(job.name)), man)
    assert first.status == "done" and first.ran == ["write", "next"]
    assert (tmp_path / ".run.next").read_text() == "1+"
    again = run_here(job, plan_job(job, stages, man.load(job.name)), man)
    assert again.ran == [] and again.skipped == ["write", "next"]
    flaky = Counting(value=2, fail_times=5)(job)
    failed = run_here(job, plan_job(job, flaky, man.load(job.name)), man)
    assert failed.status == "failed" and failed.failed_stage == "write"
    assert man.load(job.name).failure["stage"] == "write"
