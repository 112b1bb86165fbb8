"""Cluster setup: embedded LocalCluster by default, scheduler address, jobqueue errors."""

from __future__ import annotations

import argparse

import dask.array as da
import pytest

from deepict_dask.cli.common import add_cluster_args
from deepict_dask.cluster import ClusterSpec, dask_client, make_cluster, spec_from_args
from deepict_dask.errors import ConfigError


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
    with dask_client(ClusterSpec(n_workers=1, processes=False, dashboard_address=":0"), quiet=True) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert int(da.ones((10, 10), chunks=5).sum().compute()) == 100


def test_connect_to_existing_scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
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
