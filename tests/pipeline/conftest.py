"""Fixtures of the workflow tests."""

from __future__ import annotations

import distributed
import pytest


@pytest.fixture(scope="module")
def client():
    """An in-process two-worker cluster, shared by one module's tests (starting one costs about a second)."""
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c
