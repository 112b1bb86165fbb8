"""One way for every command to get a Dask client.

Default: an embedded ``LocalCluster`` (one worker process per core, one thread each, memory split
evenly). ``scheduler=ADDRESS`` (or a scheduler file) connects to an existing cluster;
``kind="slurm"|"pbs"|"sge"`` starts a dask-jobqueue cluster from the user's jobqueue configuration
(``~/.config/dask/jobqueue.yaml``; see ``deploy/``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepict_dask.errors import ConfigError

log = logging.getLogger(__name__)

JOBQUEUE_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}


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
    dashboard_address: str = ":8787"
    processes: bool = True


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


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
            dashboard_address=spec.dashboard_address,
        )
    if spec.kind in JOBQUEUE_KINDS:
        try:
            import dask_jobqueue
        except ImportError as exc:
            raise ConfigError(
                f"--cluster {spec.kind} needs dask-jobqueue: pip install 'deepict-dask[jobqueue]'"
            ) from exc
        cls = getattr(dask_jobqueue, JOBQUEUE_KINDS[spec.kind])
        try:
            cluster = cls(**spec.jobqueue_options)
        except Exception as exc:  # jobqueue reports config problems as many exception types
            raise ConfigError(f"cannot start a {spec.kind} cluster from the jobqueue config: {exc}") from exc
        cluster.scale(jobs=spec.jobs)
        return cluster
    raise ConfigError(f"unknown cluster kind {spec.kind!r}; use local, scheduler or one of {sorted(JOBQUEUE_KINDS)}")


@contextlib.contextmanager
def dask_client(spec: ClusterSpec | None = None, *, quiet: bool = False) -> Iterator[Any]:
    """Context manager yielding a ``distributed.Client``; prints the dashboard address.

    The cluster is closed on exit when this function created it.
    """
    from distributed import Client

    quiet_dask_logs()
    spec = spec or ClusterSpec()
    cluster = make_cluster(spec)
    try:
        if cluster is None:
            if not spec.scheduler:
                raise ConfigError("a scheduler address or scheduler file is needed")
            if Path(spec.scheduler).is_file():
                client = Client(scheduler_file=spec.scheduler)
            else:
                try:
                    client = Client(spec.scheduler, timeout="20s")
                except OSError as exc:
                    raise ConfigError(f"cannot reach Dask scheduler at {spec.scheduler}: {exc}") from exc
        else:
            client = Client(cluster)
        with client:
            if not quiet:
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
            yield client
    finally:
        if cluster is not None:
            cluster.close()


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


def spec_from_args(args: Any) -> ClusterSpec:
    """Build a :class:`ClusterSpec` from the common CLI options (see ``cli.common.add_cluster_args``)."""
    scheduler = getattr(args, "scheduler", None)
    kind = getattr(args, "cluster", None) or ("scheduler" if scheduler else "local")
    return ClusterSpec(
        kind=kind,
        scheduler=scheduler,
        n_workers=getattr(args, "workers", None),
        threads_per_worker=getattr(args, "threads_per_worker", None),
        memory_limit=getattr(args, "memory_limit", None),
        jobs=getattr(args, "jobs", None) or 1,
    )
