"""Cluster setup: embedded LocalCluster by default, scheduler address, jobqueue errors.

Also: the dashboard listens on 127.0.0.1 unless exposed on purpose, and a jobqueue cluster whose
submit command is missing or fails ends within seconds with one line naming the cause.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import pytest

from deepict_dask.cli.common import add_cluster_args, spec_from_args
from deepict_dask.cluster import ClusterSpec, dask_client, make_cluster
from deepict_dask.errors import ConfigError
from tests.helpers import mrc_file


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_cluster_args(p)
    return p.parse_args(list(argv))


def test_spec_from_args_defaults_to_local():
    spec = spec_from_args(_args())
    assert spec.kind == "local" and spec.scheduler is None
    spec = spec_from_args(_args("--scheduler", "tcp://1.2.3.4:8786"))
    assert spec.kind == "scheduler" and spec.scheduler == "tcp://1.2.3.4:8786"
    spec = spec_from_args(_args("--workers", "3", "--memory-limit", "1GiB"))
    assert (spec.n_workers, spec.memory_limit) == (3, "1GiB")


def test_local_cluster_runs_dask_work():
    with dask_client(ClusterSpec(n_workers=1, processes=False, dashboard_address="127.0.0.1:0"), quiet=True) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert int(da.ones((10, 10), chunks=5).sum().compute()) == 100


def test_connect_to_existing_scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        spec = ClusterSpec(kind="scheduler", scheduler=cluster.scheduler_address)
        with dask_client(spec, quiet=True) as client:
            assert client.submit(lambda x: x + 1, 1).result() == 2
        assert cluster.status.name == "running"  # we did not close a cluster we did not start


def test_unknown_kind_and_missing_scheduler():
    with pytest.raises(ConfigError, match="unknown cluster kind"):
        make_cluster(ClusterSpec(kind="kubernetes"))
    with pytest.raises(ConfigError, match="scheduler"):
        with dask_client(ClusterSpec(kind="scheduler"), quiet=True):
            pass


def test_jobqueue_config_errors_are_clear(monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is the optional 'jobqueue' extra")
    import dask

    # No cores/memory configured for SLURM: dask-jobqueue refuses, and we say so in one line.
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(ConfigError, match="slurm"):
            make_cluster(ClusterSpec(kind="slurm"))


def _listening_hosts(port: int) -> set[str]:
    """Addresses this process listens on at ``port``."""
    import psutil

    return {c.laddr.ip for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_local_dashboard_listens_on_loopback_only(capsys):
    with dask_client(ClusterSpec(n_workers=1, processes=False)) as client:
        port = client.cluster.scheduler.http_server.port
        assert _listening_hosts(port) == {"127.0.0.1"}
    assert f"Dask dashboard: http://127.0.0.1:{port}/status" in capsys.readouterr().err


def test_exposing_the_dashboard_is_explicit_and_warned(caplog):
    spec = spec_from_args(_args("--dashboard-address", "0.0.0.0:0"))
    with caplog.at_level(logging.WARNING, logger="deepict_dask"):
        with make_cluster(ClusterSpec(n_workers=1, processes=False, dashboard_address=spec.dashboard_address)) as c:
            assert _listening_hosts(c.scheduler.http_server.port) == {"0.0.0.0"}
    assert "no login" in caplog.text
    with pytest.raises(ConfigError, match="HOST:PORT"):
        make_cluster(ClusterSpec(n_workers=1, processes=False, dashboard_address="localhost"))


@pytest.fixture
def slurm_profile(monkeypatch, tmp_path):
    """A minimal SLURM profile with the scheduler on 127.0.0.1 (a real one uses the node's address)."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is the optional 'jobqueue' extra")
    import dask

    monkeypatch.chdir(tmp_path)
    with dask.config.set({"jobqueue.slurm.cores": 1, "jobqueue.slurm.memory": "1GiB",
                          "jobqueue.slurm.scheduler-options": {"host": "127.0.0.1"}}):
        yield


def _fake_tools(bin_dir: Path, **scripts: str) -> str:
    """A PATH holding only ``bin_dir`` with shell scripts named like batch-system commands."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return str(bin_dir)


def test_jobqueue_dashboard_listens_on_loopback_only(slurm_profile):
    with make_cluster(ClusterSpec(kind="slurm", jobs=0)) as cluster:
        assert _listening_hosts(cluster.scheduler.http_server.port) == {"127.0.0.1"}


def test_missing_submit_command_fails_at_once(slurm_profile, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "bin"))  # no sbatch
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cluster kind 'slurm': .*sbatch not found"):
        with dask_client(ClusterSpec(kind="slurm", worker_wait=60), quiet=True):
            pass
    assert time.monotonic() - t0 < 20
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged either


def test_queued_jobs_that_never_start_time_out(slurm_profile, tmp_path, monkeypatch):
    """sbatch accepts the job but no worker ever connects: one line after worker_wait, jobs cancelled."""
    cancelled = tmp_path / "cancelled"
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "bin", sbatch="echo 'Submitted batch job 4242'\n",
                                           scancel=f"echo \"$@\" >> {cancelled}\n"))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"no workers arrived in 1\.5 s"):
        with dask_client(ClusterSpec(kind="slurm", worker_wait=1.5), quiet=True):
            pass
    waited = time.monotonic() - t0
    assert waited >= 1.5 and waited < 20  # it waited worker_wait for a worker, and did not hang
    assert cancelled.read_text().split() == ["4242"]


def test_cli_failing_submission_is_one_line_and_quick(tmp_path):
    """``deepict convert --cluster slurm`` with an sbatch that refuses: exit 2, one line, no hang."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is the optional 'jobqueue' extra")
    import numpy as np

    src = tmp_path / "tomo.mrc"
    mrc_file(src, np.zeros((4, 4, 4), np.float32), 10.0)
    path = _fake_tools(tmp_path / "bin", sbatch="echo 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    env = {**os.environ, "PATH": f"{path}:{os.environ['PATH']}", "PYTHONPATH": str(Path(__file__).parents[1]),
           "DASK_JOBQUEUE__SLURM__CORES": "1", "DASK_JOBQUEUE__SLURM__MEMORY": "1GiB",
           "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": "{'host': '127.0.0.1'}"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "deepict_dask", "convert", str(src), "--out", str(tmp_path / "out"), "--no-progress",
         "--cluster", "slurm", "--dashboard-address", "127.0.0.1:0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "deepict convert: error: cluster kind 'slurm': submitting a worker job: "
        "sbatch failed: sbatch: error: invalid partition specified: gpu"
    ]


def test_run_config_sets_dashboard_and_wait_and_the_command_line_wins():
    from deepict_dask.pipeline.config import RunConfig
    from deepict_dask.pipeline.run import cluster_spec

    config = RunConfig.model_validate({"inputs": {"paths": ["t.mrc"]},
                                       "cluster": {"dashboard": ":8787", "worker_wait": 30}})
    spec = cluster_spec(config)
    assert (spec.dashboard_address, spec.worker_wait) == (":8787", 30)
    spec = cluster_spec(config, spec_from_args(_args("--dashboard-address", "127.0.0.1:9999")))
    assert (spec.dashboard_address, spec.worker_wait) == ("127.0.0.1:9999", 30)
    assert cluster_spec(RunConfig.model_validate({"inputs": {"paths": ["t.mrc"]}})).dashboard_address is None
