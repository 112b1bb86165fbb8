"""Options shared by several commands, so that one spelling means one thing everywhere.

``-o/--out`` is the output path, ``--overwrite`` replaces an existing output (refused otherwise),
``--chunks`` the chunk edge, ``--no-progress`` turns the progress display off (it is also off when
standard error is not a terminal). Old spellings stay accepted as hidden aliases with a warning.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose where the Dask work runs."""
    g = parser.add_argument_group("Dask cluster")
    g.add_argument("--scheduler", metavar="ADDRESS", help="connect to an existing Dask scheduler (tcp://host:8786 or a scheduler file)")
    g.add_argument("--cluster", choices=["local", "slurm", "pbs", "sge"], help="cluster to start (default: an embedded LocalCluster)")
    g.add_argument("--workers", type=int, metavar="N", help="LocalCluster workers (default: one per core)")
    g.add_argument("--threads-per-worker", type=int, metavar="N", help="threads per LocalCluster worker (default 1)")
    g.add_argument("--memory-limit", metavar="SIZE", help="memory limit per LocalCluster worker, e.g. 4GiB (default: RAM / workers)")
    g.add_argument("--jobs", type=int, metavar="N", help="jobqueue jobs to request (default 1)")
    g.add_argument("--dashboard-address", metavar="HOST:PORT",
                   help="where the Dask dashboard listens (default 127.0.0.1:8787, this host only: it has no "
                        "login; use an SSH tunnel). ':8787' opens it to the network")


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~deepict_dask.cluster.ClusterSpec` chosen by :func:`add_cluster_args`' options."""
    from deepict_dask.cluster import ClusterSpec

    scheduler = getattr(args, "scheduler", None)
    kind = getattr(args, "cluster", None) or ("scheduler" if scheduler else "local")
    return ClusterSpec(
        kind=kind,
        scheduler=scheduler,
        n_workers=getattr(args, "workers", None),
        threads_per_worker=getattr(args, "threads_per_worker", None),
        memory_limit=getattr(args, "memory_limit", None),
        jobs=getattr(args, "jobs", None) or 1,
        dashboard_address=getattr(args, "dashboard_address", None),
    )


def unique_names(sources: list) -> list[str]:
    """Tomogram names of ``sources``; two inputs that would write the same output are an error."""
    from deepict_dask.errors import ConfigError
    from deepict_dask.io import tomogram_name

    names = [tomogram_name(p) for p in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"several inputs would write the same output name: {', '.join(dupes)}")
    return names


class InputFailures:
    """Per-input errors of a many-input command: each is printed as one line and the others go on."""

    def __init__(self, command: str, total: int):
        self.command, self.total, self.count = command, total, 0

    def report(self, exc: Exception) -> None:
        import sys

        self.count += 1
        print(f"deepict {self.command}: error: {exc}", file=sys.stderr)

    def exit_code(self) -> int:
        """2 (after a summary line) when any input failed, else 0."""
        import sys

        if self.count:
            print(f"deepict {self.command}: {self.count} of {self.total} input(s) failed", file=sys.stderr)
            return 2
        return 0


class _DeprecatedAlias(argparse.Action):
    """An old option spelling: still works, prints one warning line naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept ``old`` as a hidden alias of ``new`` (same ``dest``), warning when it is used."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``; see :func:`progress_wanted`."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress display (it is off anyway when standard error is not a terminal)")


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars go to standard error, and only when it is a terminal: logs and pipes stay clean."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def add_overwrite_arg(parser: argparse.ArgumentParser, what: str = "existing outputs") -> None:
    """``--overwrite``: without it a command refuses to replace an existing output."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} (default: refuse)")


def refuse_existing(*paths: str | os.PathLike | None, overwrite: bool) -> None:
    """Fail before any work when an output exists and ``--overwrite`` was not given."""
    from deepict_dask.errors import OutputError

    if overwrite:
        return
    for path in paths:
        if path is not None and os.path.lexists(path):
            raise OutputError("already exists (use --overwrite to replace it)", path)
