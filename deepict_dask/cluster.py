"""One way for every command to get a Dask client.

Default: an embedded ``LocalCluster`` (one worker process per core, one thread each, memory split
evenly). ``scheduler=ADDRESS`` (or a scheduler file) connects to an existing cluster;
``kind="slurm"|"pbs"|"sge"`` starts a dask-jobqueue cluster from the user's jobqueue configuration
(``~/.config/dask/jobqueue.yaml``; see ``deploy/``).

The dashboard shows worker lists, task (tomogram) names, logs and exceptions without any login, so
it listens on 127.0.0.1 unless the user names another address (reach it through an SSH tunnel).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from deepict_dask.errors import ConfigError

log = logging.getLogger(__name__)

JOBQUEUE_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
DEFAULT_DASHBOARD = "127.0.0.1:8787"
DEFAULT_WORKER_WAIT = 300.0


@dataclass
class ClusterSpec:
    """How to get workers. ``kind`` is ``local`` (default), ``scheduler`` or a jobqueue kind."""

    kind: str = "local"
    scheduler: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None
    jobs: int = 1
    jobqueue_options: dict[str, Any] = field(default_factory=dict)
    dashboard_address: str | None = None  # HOST:PORT; None: 127.0.0.1:8787 or the jobqueue profile's
    processes: bool = True
    worker_wait: float = DEFAULT_WORKER_WAIT  # seconds until a jobqueue cluster's first worker is overdue


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def dashboard_host(address: str) -> str:
    """The host part of a dashboard address ``HOST:PORT``, ``:PORT`` or ``[IPV6]:PORT`` ('' is all)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"dashboard address {address!r}: expected HOST:PORT, e.g. {DEFAULT_DASHBOARD}")
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '' (all interfaces) or a host name
        return False


def checked_dashboard(address: str) -> str:
    """``address`` after validation; a dashboard open to the network gets a warning (no login on it)."""
    if not is_loopback(dashboard_host(address)):
        log.warning("the Dask dashboard listens on %s: anyone who can reach it sees worker logs and tomogram "
                    "names (no login); prefer 127.0.0.1 and an SSH tunnel", address)
    return address


def make_cluster(spec: ClusterSpec) -> Any:
    """Create (but do not connect to) a cluster object for ``spec``; ``None`` for a scheduler address."""
    if spec.kind == "scheduler":
        return None
    if spec.kind == "local":
        from distributed import LocalCluster

        n = spec.n_workers or default_workers()
        return LocalCluster(
            n_workers=n,
            threads_per_worker=spec.threads_per_worker or 1,
            memory_limit=spec.memory_limit or "auto",
            processes=spec.processes,
            dashboard_address=checked_dashboard(spec.dashboard_address or DEFAULT_DASHBOARD),
        )
    if spec.kind in JOBQUEUE_KINDS:
        cluster, _ = make_jobqueue_cluster(spec)
        return cluster
    raise ConfigError(f"unknown cluster kind {spec.kind!r}; use local, scheduler or one of {sorted(JOBQUEUE_KINDS)}")


def make_jobqueue_cluster(spec: ClusterSpec) -> tuple[Any, list[str]]:
    """A dask-jobqueue cluster with ``spec.jobs`` jobs requested, and the list its failed submissions fill.

    dask-jobqueue retries a failed ``sbatch``/``qsub`` in the background and only logs tracebacks;
    the jobs here record the cause instead, so :func:`wait_for_first_worker` can report it.
    """
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigError(
            f"cluster kind {spec.kind!r} needs dask-jobqueue: pip install 'deepict-dask[jobqueue]'"
        ) from exc
    cls = getattr(dask_jobqueue, JOBQUEUE_KINDS[spec.kind])
    failures: list[str] = []
    options = dict(spec.jobqueue_options)
    options["scheduler_options"] = _scheduler_options(cls, spec)
    options["job_cls"] = _recording_job_cls(options.get("job_cls") or cls.job_cls, failures)
    try:
        cluster = cls(**options)
    except Exception as exc:  # jobqueue reports config problems as many exception types
        raise ConfigError(f"cannot start a {spec.kind} cluster from the jobqueue config: {exc}") from exc
    cluster.scale(jobs=spec.jobs)
    return cluster, failures


def _scheduler_options(cls: Any, spec: ClusterSpec) -> dict[str, Any]:
    """The profile's ``scheduler_options`` with the given options on top, dashboard on loopback unless set.

    Passing ``scheduler_options`` to dask-jobqueue replaces the profile's, hence the merge.
    """
    import dask

    name = spec.jobqueue_options.get("config_name") or cls.job_cls.default_config_name()
    options = dict(dask.config.get(f"jobqueue.{name}.scheduler-options", default={}) or {})
    options.update(spec.jobqueue_options.get("scheduler_options") or {})
    if spec.dashboard_address:
        options["dashboard_address"] = spec.dashboard_address
    options["dashboard_address"] = checked_dashboard(options.get("dashboard_address") or DEFAULT_DASHBOARD)
    return options


def _recording_job_cls(base: type, failures: list[str]) -> type:
    """``base`` (a dask-jobqueue Job class) whose failed submissions are appended to ``failures``.

    The failed job counts as started, so dask-jobqueue neither retries it nor logs a traceback; the
    caller reports the failure and closes the cluster.
    """

    from distributed.core import Status

    class RecordingJob(base):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            try:
                await super().start()
            except Exception as exc:  # reported by wait_for_first_worker
                failures.append(_submit_failure(self.submit_command, exc))
                self.status = Status.running

    return RecordingJob


def _submit_failure(command: str, exc: Exception) -> str:
    """One line saying why ``command`` could not submit a job (its stderr when it ran)."""
    program = command.split()[0] if command else "the submit command"
    if isinstance(exc, FileNotFoundError):
        return f"{program} not found (is this a login node of the cluster, with its tools on PATH?)"
    text = str(exc)
    stderr = text.split("stderr:", 1)[1] if "stderr:" in text else text
    return f"{program} failed: {' '.join(stderr.split()) or type(exc).__name__}"


def wait_for_first_worker(client: Any, kind: str, failures: list[str], seconds: float) -> None:
    """Return when a worker has joined; fail with one line when a submission failed or none came in time."""
    deadline = time.monotonic() + seconds
    while True:
        if failures:
            raise ConfigError(f"cluster kind {kind!r}: submitting a worker job: {failures[0]}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConfigError(f"cluster kind {kind!r}: no workers arrived in {seconds:g} s (jobs still queued? "
                              "see the queue and the job logs; cluster.worker_wait sets the wait)")
        try:
            client.wait_for_workers(1, timeout=min(0.5, left))
            return
        except TimeoutError:
            continue


def dashboard_link(client: Any, address: str | None) -> str:
    """The dashboard's URL; the host is 127.0.0.1 when it listens there (dask shows the scheduler's IP)."""
    link = client.dashboard_link
    if address is None or not is_loopback(dashboard_host(address)):
        return link
    parts = urlsplit(link)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))


@contextlib.contextmanager
def dask_client(spec: ClusterSpec | None = None, *, quiet: bool = False) -> Iterator[Any]:
    """Context manager yielding a ``distributed.Client``; prints the dashboard address.

    The cluster is closed on exit when this function created it. A jobqueue cluster is waited for
    until its first worker joins (at most ``spec.worker_wait`` seconds).
    """
    from distributed import Client

    quiet_dask_logs()
    spec = spec or ClusterSpec()
    failures: list[str] | None = None
    if spec.kind in JOBQUEUE_KINDS:
        cluster, failures = make_jobqueue_cluster(spec)
    else:
        cluster = make_cluster(spec)
    try:
        if cluster is None:
            client = _connect(spec)
        else:
            client = Client(cluster)
        with client:
            if failures is not None:
                wait_for_first_worker(client, spec.kind, failures, spec.worker_wait)
            if not quiet:
                address = None if cluster is None else _bound_dashboard(cluster)
                print(f"Dask dashboard: {dashboard_link(client, address)}", file=sys.stderr, flush=True)
            yield client
    finally:
        if cluster is not None:
            cluster.close()


def _connect(spec: ClusterSpec) -> Any:
    """A client of the existing scheduler named by ``spec.scheduler`` (address or scheduler file)."""
    from distributed import Client

    if not spec.scheduler:
        raise ConfigError("a scheduler address or scheduler file is needed")
    if Path(spec.scheduler).is_file():
        return Client(scheduler_file=spec.scheduler)
    try:
        return Client(spec.scheduler, timeout="20s")
    except OSError as exc:
        raise ConfigError(f"cannot reach Dask scheduler at {spec.scheduler}: {exc}") from exc


def _bound_dashboard(cluster: Any) -> str | None:
    """The dashboard address ``cluster``'s in-process scheduler was asked for (``None``: unknown)."""
    scheduler = getattr(cluster, "scheduler", None)
    spec = getattr(cluster, "scheduler_spec", None) or {}
    address = spec.get("options", {}).get("dashboard_address")
    return address if scheduler is not None and isinstance(address, str) else None


def quiet_dask_logs(level: int = logging.WARNING) -> None:
    """Turn distributed's chatter (every worker start and stop is logged at INFO) down to ``level``.

    Does nothing when the user asked for more output (``deepict -v``). Sets the environment for worker
    processes started later, and imports ``distributed`` first because its import resets its loggers.
    """
    if logging.getLogger("deepict_dask").isEnabledFor(logging.INFO):
        return
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", logging.getLevelName(level).lower())
    import distributed  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado"):
            logger = logging.getLogger(name)
            logger.setLevel(max(logger.level, level))  # never louder than an earlier, stricter call
    logging.getLogger("bokeh").setLevel(logging.ERROR)  # a wildcard-host notice on every start
