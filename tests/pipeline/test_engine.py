"""The workflow engine with stand-in stages: resume, hashing, --force, failures, bounds, GPU, dead workers."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import distributed
import numpy as np
import pytest

from deepict_dask.io.atomic import atomic_path
from deepict_dask.pipeline.engine import ProgressSink, Stage, TomoJob, plan_job, run_jobs
from deepict_dask.pipeline.manifest import Manifest, file_fingerprint

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---- stand-in stages (tests only): each writes one .npy atomically and logs its call


def _log(job: TomoJob, stage: str) -> None:
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(job.run_dir) / "calls.log", "a") as fh:
        fh.write(f"{job.name} {stage}\n")


def _save(path: Path, arr: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    return path


def st_load(job, params, upstream):
    _log(job, "load")
    arr = np.load(job.source)  # a corrupt file raises here
    if params.get("marker"):
        Path(params["marker"]).touch()
    time.sleep(params.get("sleep", 0))
    return {"outputs": [_save(Path(job.run_dir) / job.name / "load.npy", arr * params["scale"])]}


def st_predict(job, params, upstream):
    _log(job, "predict")
    arr = np.load(upstream["load"]["outputs"][0])
    result = {"sum": float(arr.sum())}
    if params.get("report_resources"):
        from distributed import get_worker

        w = get_worker()
        result["resources"] = dict(w.state.tasks[w.get_current_task()].resource_restrictions or {})
    time.sleep(params.get("sleep", 0))
    return {"outputs": [_save(Path(job.run_dir) / job.name / "predict.npy", arr + params["offset"])], "result": result}


def st_pick(job, params, upstream):
    _log(job, "pick")
    arr = np.load(upstream["predict:m"]["outputs"][0])
    n = int((arr > params["threshold"]).sum())
    return {"outputs": [_save(Path(job.run_dir) / job.name / "pick.npy", np.array([n]))], "result": {"count": n}}


def chain(scale=1.0, offset=0.0, threshold=0.5, **extra):
    def stages_for(job):
        return [
            Stage("load", st_load, {"scale": scale, **extra.get("load", {})}),
            Stage("predict:m", st_predict, {"offset": offset, **extra.get("predict", {})}, deps=("load",), gpu=True),
            Stage("pick:a", st_pick, {"threshold": threshold}, deps=("predict:m",)),
        ]

    return stages_for


def make_jobs(tmp: Path, n: int, run_dir: Path, corrupt: tuple[int, ...] = ()) -> list[TomoJob]:
    jobs = []
    rng = np.random.default_rng(0)
    for i in range(n):
        src = tmp / f"t{i}.npy"
        if i in corrupt:
            src.write_bytes(b"not a numpy file")
        else:
            np.save(src, rng.random((8, 8, 8)))
        jobs.append(TomoJob(f"t{i}", str(src), str(run_dir), fingerprint=file_fingerprint(src)))
    return jobs


def calls(run_dir: Path) -> list[str]:
    p = run_dir / "calls.log"
    return sorted(p.read_text().splitlines()) if p.exists() else []


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def test_resume_skip_change_force_and_missing_output(tmp_path, client):
    run = tmp_path / "run"
    jobs = make_jobs(tmp_path, 3, run)
    man = Manifest(run)
    out = run_jobs(client, jobs, chain(), man)
    assert all(o.status == "done" for o in out.values())
    assert len(calls(run)) == 9
    first = (run / "t1" / "pick.npy").read_bytes()

    # re-run: nothing executes
    (run / "calls.log").unlink()
    out = run_jobs(client, jobs, chain(), man)
    assert calls(run) == [] and all(o.ran == [] for o in out.values())

    # a changed threshold recomputes pick only; a changed offset recomputes predict and pick
    run_jobs(client, jobs, chain(threshold=0.9), man)
    assert calls(run) == sorted(f"t{i} pick" for i in range(3))
    (run / "calls.log").unlink()
    run_jobs(client, jobs, chain(offset=0.1, threshold=0.9), man)
    assert calls(run) == sorted([f"t{i} pick" for i in range(3)] + [f"t{i} predict" for i in range(3)])

    # a removed output is never trusted; --force by kind recomputes that stage and downstream
    (run / "calls.log").unlink()
    (run / "t2" / "predict.npy").unlink()
    run_jobs(client, jobs, chain(offset=0.1, threshold=0.9), man)
    assert calls(run) == ["t2 pick", "t2 predict"]
    (run / "calls.log").unlink()
    run_jobs(client, jobs, chain(offset=0.1, threshold=0.9), man, force=["predict"])
    assert len(calls(run)) == 6 and not any("load" in c for c in calls(run))

    # back to the first settings: identical output, and records carry results
    run_jobs(client, jobs, chain(), man)
    assert (run / "t1" / "pick.npy").read_bytes() == first
    rec = man.load("t1")
    assert set(rec.stages) == {"load", "predict:m", "pick:a"}
    assert rec.stages["pick:a"].result["count"] == int(np.load(run / "t1" / "pick.npy")[0])


def test_changed_input_file_recomputes_everything(tmp_path, client):
    run = tmp_path / "run"
    jobs = make_jobs(tmp_path, 1, run)
    man = Manifest(run)
    run_jobs(client, jobs, chain(), man)
    time.sleep(0.01)
    np.save(jobs[0].source, np.ones((8, 8, 8)))
    job = TomoJob("t0", jobs[0].source, str(run), fingerprint=file_fingerprint(jobs[0].source))
    plans = plan_job(job, chain()(job), man.load("t0"))
    assert [p.reason for p in plans] == ["changed", "upstream", "upstream"]


def test_corrupt_input_fails_alone_with_reason(tmp_path, client):
    run = tmp_path / "run"
    jobs = make_jobs(tmp_path, 4, run, corrupt=(1,))
    man = Manifest(run)
    out = run_jobs(client, jobs, chain(), man)
    assert [out[f"t{i}"].status for i in range(4)] == ["done", "failed", "done", "done"]
    assert out["t1"].failed_stage == "load"
    assert "pickle" in out["t1"].reason.lower() or "ValueError" in out["t1"].reason or "Error" in out["t1"].reason
    assert man.load("t1").failure["stage"] == "load"
    assert not (run / "t1").exists()  # nothing half-written for the failed tomogram
    # fix the file: the re-run processes only t1 and clears the failure
    np.save(jobs[1].source, np.zeros((8, 8, 8)))
    job1 = TomoJob("t1", jobs[1].source, str(run), fingerprint=file_fingerprint(jobs[1].source))
    (run / "calls.log").unlink()
    out = run_jobs(client, [jobs[0], job1, jobs[2], jobs[3]], chain(), man)
    assert all(o.status == "done" for o in out.values())
    assert calls(run) == ["t1 load", "t1 pick", "t1 predict"]
    assert man.load("t1").failure is None


class Recorder(ProgressSink):
    def __init__(self):
        self.running: list[int] = []

    def update(self, done, failed, running, queued, last=""):
        self.running.append(running)


def test_bounded_in_flight_and_readable_keys(tmp_path, client):
    run = tmp_path / "run"
    jobs = make_jobs(tmp_path, 6, run)
    rec = Recorder()
    seen_keys: list[str] = []

    def watch():
        while not (run / "t5" / "pick.npy").exists():
            for keys in client.processing().values():
                seen_keys.extend(str(k) for k in keys)
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    out = run_jobs(client, jobs, chain(load={"sleep": 0.05}), Manifest(run), max_in_flight=2, progress=rec)
    t.join(timeout=5)
    assert all(o.status == "done" for o in out.values())
    assert max(rec.running) == 2
    assert any(k.startswith("load-t") for k in seen_keys)
    for k in seen_keys:
        stage, tomo, token = k.rsplit("-", 2)
        assert stage in {"load", "predict:m", "pick:a"} and tomo.startswith("t") and len(token) == 10


def test_gpu_resource_restriction_is_on_the_task(tmp_path):
    run = tmp_path / "run"
    jobs = make_jobs(tmp_path, 2, run)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=1, resources={"GPU": 1}, dashboard_address=None
    ) as c:
        from deepict_dask.pipeline.engine import gpu_available

        assert gpu_available(c)
        man = Manifest(run)
        run_jobs(c, jobs, chain(predict={"report_resources": True}), man, use_gpu_resources=True)
    for job in jobs:
        assert man.load(job.name).stages["predict:m"].result["resources"] == {"GPU": 1}


def test_no_gpu_restriction_on_cpu_clusters(tmp_path, client):
    from deepict_dask.pipeline.engine import gpu_available

    assert not gpu_available(client)
    run = tmp_path / "run"
    man = Manifest(run)
    run_jobs(client, make_jobs(tmp_path, 1, run), chain(predict={"report_resources": True}), man)
    assert man.load("t0").stages["predict:m"].result["resources"] == {}


def test_killed_worker_run_completes_with_identical_outputs(tmp_path):
    ref_run = tmp_path / "ref"
    jobs_ref = make_jobs(tmp_path, 4, ref_run)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        run_jobs(c, jobs_ref, chain(), Manifest(ref_run))

    run = tmp_path / "run"
    jobs = [TomoJob(j.name, j.source, str(run), fingerprint=j.fingerprint) for j in jobs_ref]
    marker = tmp_path / "started"
    killed = []
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="1GiB"
    ) as cluster, distributed.Client(cluster) as c:
        pids = c.run(os.getpid)

        def killer():
            deadline = time.time() + 30
            while not marker.exists() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # the marked task is now sleeping inside its stage
            victim = next(iter(pids.values()))
            os.kill(victim, 9)
            killed.append(victim)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        out = run_jobs(c, jobs, chain(load={"sleep": 0.6, "marker": str(marker)}), Manifest(run), retries=0)
        t.join(timeout=10)
    assert killed, "the worker was not killed"
    assert all(o.status == "done" for o in out.values()), {k: v.reason for k, v in out.items()}
    for j in jobs:
        for name in ("load.npy", "predict.npy", "pick.npy"):
            assert (run / j.name / name).read_bytes() == (ref_run / j.name / name).read_bytes()
