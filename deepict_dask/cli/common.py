"""Options shared by several commands."""

from __future__ import annotations

import argparse


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
