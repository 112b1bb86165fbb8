"""The shipped dask-jobqueue profiles start real workers.

Each section of ``deploy/jobqueue-*.yaml`` is loaded the documented way (merged into the Dask
configuration like ``~/.config/dask/jobqueue.yaml``), its job script is generated, and the worker
command line in it is run as a real ``dask worker`` against the cluster's own scheduler, here on
127.0.0.1, until every worker process registers. No batch system is needed.

Host-specific settings overridden here, and only these: the scheduler listens on 127.0.0.1 (a real
cluster uses the node's address or ``interface``), the dashboard on a free port, ``$TMPDIR`` (the
workers' local directory) points into the test's temporary directory, and log directories are
created there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is the optional 'jobqueue' extra")

import dask  # noqa: E402
from distributed import Client  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROFILES = [
    ("jobqueue-slurm.yaml", "SLURMCluster", "slurm", {"GPU": 1}),
    ("jobqueue-slurm.yaml", "SLURMCluster", "slurm-cpu", {}),
    ("jobqueue-pbs.yaml", "PBSCluster", "pbs", {"GPU": 1}),
    ("jobqueue-pbs.yaml", "PBSCluster", "pbs-cpu", {}),
]


def _loaded(profile: Path) -> dict:
    """The ``jobqueue`` config after copying ``profile`` into the user's Dask config directory."""
    user = dask.config.collect(paths=[str(profile)], env={})
    return dask.config.merge(dask.config.config, user)["jobqueue"]


def _worker_command(job_script: str) -> str:
    lines = [ln for ln in job_script.splitlines() if "distributed.cli.dask_worker" in ln]
    assert len(lines) == 1, job_script
    return lines[0]


def test_every_profile_section_is_tested():
    """A section added to a profile must be added to PROFILES too."""
    for name in sorted(DEPLOY.glob("jobqueue-*.yaml")):
        shipped = set(dask.config.collect(paths=[str(name)], env={})["jobqueue"])
        assert shipped == {p[2] for p in PROFILES if p[0] == name.name}


@pytest.mark.parametrize(("profile", "cls_name", "section", "resources"), PROFILES,
                         ids=[p[2] for p in PROFILES])
def test_profile_starts_real_workers(profile, cls_name, section, resources, tmp_path, monkeypatch):
    import dask_jobqueue

    monkeypatch.chdir(tmp_path)  # log_directory is created relative to the working directory
    cls = getattr(dask_jobqueue, cls_name)
    with dask.config.set({"jobqueue": _loaded(DEPLOY / profile)}):
        processes = dask.config.get(f"jobqueue.{section}.processes")
        cores = dask.config.get(f"jobqueue.{section}.cores")
        with cls(config_name=section,
                 scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}) as cluster:
            script = cluster.job_script()
            assert "--lifetime" in script
            command = _worker_command(script)
            env = {**os.environ, "TMPDIR": str(tmp_path)}
            # bash, as the job script would: $TMPDIR and the quoting are the shell's
            proc = subprocess.Popen(["bash", "-c", command], env=env, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                with Client(cluster) as client:
                    _wait_for_workers(client, processes, proc, command)
                    workers = client.scheduler_info(n_workers=-1)["workers"].values()
                    assert len(workers) == processes
                    for w in workers:
                        assert w["resources"] == resources
                        assert w["nthreads"] == cores // processes
                    # --lifetime was understood: 230 min, staggered by up to 5 min (retire before 4 h)
                    lifetimes = client.run(lambda dask_worker: dask_worker.lifetime).values()
                    assert all(225 * 60 <= t <= 235 * 60 for t in lifetimes), lifetimes
            finally:
                _stop(proc)


def _wait_for_workers(client: Client, n: int, proc: subprocess.Popen, command: str) -> None:
    """Wait until ``n`` workers joined; fail at once (with the worker's stderr) when the command exits."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            client.wait_for_workers(n, timeout=1)
            return
        except TimeoutError:
            continue
    _stop(proc)
    err = proc.stderr.read().decode() if proc.stderr else ""
    pytest.fail(f"workers did not register from\n{command}\n{err[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """End the worker process group started by the test (the nanny and its worker processes)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sbatch_script_dashboard_listens_on_loopback_only(tmp_path):
    """The scheduler line of deploy/deepict-run.sbatch, run as written: its dashboard is on 127.0.0.1."""
    import json

    import psutil

    lines = (DEPLOY / "deepict-run.sbatch").read_text().splitlines()
    setting = [ln for ln in lines if ln.startswith("DASHBOARD=")]
    start = [ln for ln in lines if ln.startswith("$RUN dask scheduler")]
    assert len(setting) == 1 and len(start) == 1
    sched_file = tmp_path / "sched.json"
    command = f"RUN=; SCHED_FILE={sched_file}; {setting[0]}; exec {start[0].removesuffix('&')}"
    proc = subprocess.Popen(["bash", "-c", command], env={k: v for k, v in os.environ.items() if k != "DASHBOARD"},
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address, deadline = None, time.monotonic() + 30
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                address = json.loads(sched_file.read_text())["address"]
            except (OSError, ValueError, KeyError):  # not written (completely) yet
                time.sleep(0.2)
        assert address, "the scheduler did not start"
        comm_port = int(address.rsplit(":", 1)[1])
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port != comm_port]
        assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening
    finally:
        _stop(proc)
