"""One ``deepict run`` per run directory, also across hosts sharing the directory.

The lock is a *lease*: a small JSON file (host, pid, a unique token, a heartbeat time) created
with ``O_EXCL`` and refreshed by a background thread every ``interval`` seconds. Another process,
on any host, refuses the directory while the heartbeat is fresh (younger than ``stale_after``);
it takes over only a stale lease, or at once one of a dead process on its own host. Hosts compare
the heartbeat with their own clocks, so ``stale_after`` is several intervals (clocks of cluster
nodes agree to well under a second).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deepict_dask.errors import OutputError
from deepict_dask.io.atomic import pid_alive
from deepict_dask.layout import LOCK_NAME, RunLayout

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0
STALE_AFTER_S = 4 * HEARTBEAT_S


def read_lease(path: Path) -> dict[str, Any] | None:
    """The lease's content; None when there is none; ``{}`` when it cannot be parsed."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lease_age(path: Path, info: dict[str, Any]) -> float:
    """Seconds since the holder's last heartbeat (the file's own time when the content is unreadable)."""
    beat = info.get("heartbeat")
    if not isinstance(beat, (int, float)):
        try:
            beat = path.stat().st_mtime
        except OSError:
            return float("inf")
    return time.time() - float(beat)


def is_stale(path: Path, info: dict[str, Any], host: str, stale_after: float) -> bool:
    """A lease nobody keeps alive: no heartbeat for ``stale_after`` s, or a dead process of this host."""
    if info.get("host") == host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
        return True
    return lease_age(path, info) > stale_after


class RunLease:
    """A held lease: refreshes the heartbeat until released."""

    def __init__(self, path: Path, host: str, interval: float):
        self.path, self.host, self.interval = path, host, interval
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def content(self) -> dict[str, Any]:
        return {"host": self.host, "pid": os.getpid(), "token": self.token, "started": self.started,
                "heartbeat": time.time()}

    def create(self) -> bool:
        """Create the lease file exclusively; False when someone else's is there."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.content()))
        return True

    def beat(self) -> bool:
        """Refresh the heartbeat (write aside, rename over); False when the lease is no longer ours."""
        info = read_lease(self.path)
        if not info or info.get("token") != self.token:
            return False
        tmp = self.path.with_name(f"{self.path.name}.beat-{self.token[:8]}")
        tmp.write_text(json.dumps(self.content()))
        os.replace(tmp, self.path)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.beat():
                    log.error("%s: the run lock was taken over by another process", self.path.parent)
                    return
            except OSError as exc:  # a passing file-system hiccup: try again next interval
                log.warning("%s: cannot refresh the run lock: %s", self.path.parent, exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="deepict-run-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        info = read_lease(self.path)
        if info and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)


def _take_over(path: Path, stale: dict[str, Any]) -> None:
    """Move a stale lease out of the way; put it back if what was moved is not the one read."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # someone else moved it first
    moved = read_lease(aside)
    if stale and moved is not None and moved.get("token") != stale.get("token"):
        # a fresh lease created in between: restore it (link fails if yet another one exists)
        try:
            os.link(aside, path)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


def acquire(run_dir: Path, *, host: str | None = None, interval: float = HEARTBEAT_S,
            stale_after: float | None = None) -> RunLease:
    """Take the run directory's lease, or raise :class:`OutputError` naming who holds it."""
    host = host or socket.gethostname()
    stale_after = 4 * interval if stale_after is None else stale_after
    path = RunLayout(run_dir).lock
    lease = RunLease(path, host, interval)
    for _ in range(5):
        if lease.create():
            lease.start()
            return lease
        info = read_lease(path)
        if info is None:
            continue  # released just now
        if not is_stale(path, info, host, stale_after):
            raise OutputError(
                f"another deepict run (pid {info.get('pid', '?')}) on host {info.get('host', '?')} is using "
                f"this directory (heartbeat {lease_age(path, info):.0f} s ago); wait for it, or delete "
                f"{LOCK_NAME} if that run is gone", run_dir)
        if info.get("host") not in (None, host):
            log.warning("%s: taking over the run lock of host %s (no heartbeat for %.0f s)", run_dir,
                        info.get("host"), lease_age(path, info))
        _take_over(path, info)
    raise OutputError("cannot take the run lock (other runs keep claiming it)", run_dir)


@contextmanager
def run_lock(run_dir: Path, *, host: str | None = None, interval: float = HEARTBEAT_S,
             stale_after: float | None = None) -> Iterator[RunLease]:
    """One ``deepict run`` per run directory at a time (two would race on the same outputs)."""
    lease = acquire(run_dir, host=host, interval=interval, stale_after=stale_after)
    try:
        yield lease
    finally:
        lease.release()
