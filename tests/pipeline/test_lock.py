"""The run lock is a lease: refused across hosts while its heartbeat is fresh, taken over once stale."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepict_dask.errors import OutputError
from deepict_dask.pipeline.lock import LOCK_NAME, read_lease, run_lock

INTERVAL, STALE = 0.1, 0.6

HOLDER = f"""\
import sys, time
from pathlib import Path
from deepict_dask.pipeline.lock import run_lock
with run_lock(Path(sys.argv[1]), host="node-a", interval={INTERVAL}, stale_after={STALE}):
    print("held", flush=True)
    time.sleep(60)
"""


def start_holder(run_dir: Path) -> subprocess.Popen:
    """Another process, claiming to run on host ``node-a``, that holds the lease until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lease_of_another_host_is_refused_while_fresh_and_taken_over_when_stale(tmp_path, caplog):
    proc = start_holder(tmp_path)
    try:
        first = read_lease(tmp_path / LOCK_NAME)
        time.sleep(3 * STALE)  # the holder outlives several stale periods: its heartbeat keeps it fresh
        with pytest.raises(OutputError, match="another deepict run .* on host node-a"):
            with run_lock(tmp_path, host="node-b", interval=INTERVAL, stale_after=STALE):
                pass
        assert read_lease(tmp_path / LOCK_NAME)["heartbeat"] > first["heartbeat"]
    finally:
        proc.kill()  # a node that dies: no release, the heartbeat stops
        proc.wait()
    assert read_lease(tmp_path / LOCK_NAME)["host"] == "node-a"
    with pytest.raises(OutputError):  # still fresh right after the death
        with run_lock(tmp_path, host="node-b", interval=INTERVAL, stale_after=STALE):
            pass
    time.sleep(STALE + 2 * INTERVAL)
    with caplog.at_level(logging.WARNING, logger="deepict_dask"):
        with run_lock(tmp_path, host="node-b", interval=INTERVAL, stale_after=STALE) as lease:
            assert read_lease(tmp_path / LOCK_NAME)["token"] == lease.token
    assert "taking over the run lock of host node-a" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_dead_process_of_the_same_host_is_stale_at_once_and_a_live_one_is_not(tmp_path):
    host = socket.gethostname()
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"host": host, "pid": 2**22 + 12345, "token": "x", "heartbeat": time.time()}))
    with run_lock(tmp_path, host=host):
        pass
    lock.write_text(json.dumps({"host": host, "pid": os.getppid(), "token": "y", "heartbeat": time.time()}))
    with pytest.raises(OutputError, match=f"pid {os.getppid()}"):
        with run_lock(tmp_path, host=host):
            pass


def test_two_racing_claims_get_one_lease(tmp_path):
    from deepict_dask.pipeline.lock import RunLease

    a = RunLease(tmp_path / LOCK_NAME, "node-a", INTERVAL)
    b = RunLease(tmp_path / LOCK_NAME, "node-b", INTERVAL)
    assert a.create() is True and b.create() is False  # O_EXCL: the second creator loses
    assert b.beat() is False and a.beat() is True  # only the holder refreshes
    a.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lease_with_an_impossible_pid_is_one_error_not_a_traceback(tmp_path):
    """A garbled lease of this host (pid beyond the OS range) is judged by its heartbeat, like any other."""
    lease = {"host": socket.gethostname(), "pid": 2**70, "token": "x", "heartbeat": time.time()}
    (tmp_path / LOCK_NAME).write_text(json.dumps(lease))
    with pytest.raises(OutputError, match="another deepict run"):
        with run_lock(tmp_path):
            pass
