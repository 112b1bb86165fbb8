"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib

import dask
import pytest


@pytest.fixture
def no_cluster(monkeypatch):
    """Run ``deepict convert`` on the synchronous scheduler: the cluster is not what these tests are about."""
    import deepict_dask.cli.convert as convert_cli

    @contextlib.contextmanager
    def local(_spec):
        with dask.config.set(scheduler="synchronous"):
            yield None

    monkeypatch.setattr(convert_cli, "dask_client", local)
