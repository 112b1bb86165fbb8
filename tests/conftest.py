"""Fixtures shared by several test folders (folder-only ones live in that folder's conftest.py)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import dask
import pytest

from tests.helpers import tiny_model


@pytest.fixture
def no_cluster(monkeypatch):
    """Run ``deepict convert`` on the synchronous scheduler: the cluster is not what these tests are about."""
    import deepict_dask.cli.convert as convert_cli

    @contextlib.contextmanager
    def local(_spec):
        with dask.config.set(scheduler="synchronous"):
            yield None

    monkeypatch.setattr(convert_cli, "dask_client", local)


@pytest.fixture
def threaded_cluster(monkeypatch):
    """Start the CLI's LocalCluster with threads instead of processes: same code path, faster tests."""
    import deepict_dask.cluster as cluster

    real = cluster.make_cluster
    monkeypatch.setattr(cluster, "make_cluster", lambda spec: real(
        dataclasses.replace(spec, processes=False, dashboard_address="127.0.0.1:0")))


@pytest.fixture
def sync_scheduler():
    """Compute on dask's synchronous scheduler (no threads: deterministic, easy to debug)."""
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A folder with two untrained one-level U-Nets at 10 A: ``tiny3d.safetensors`` (ribosome, fas,
    membrane; 16^3 patches) and ``tiny2d.safetensors`` (cytosol, organelle; 32^2 patches)."""
    import torch

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)  # once for both, as the pipeline tests' expectations were made
    tiny_model(d / "tiny3d.safetensors", name="tiny3d", classes=["ribosome", "fas", "membrane"], seed=None)
    tiny_model(d / "tiny2d.safetensors", name="tiny2d", dim=2, classes=["cytosol", "organelle"], patch=32,
               seed=None)
    return d
