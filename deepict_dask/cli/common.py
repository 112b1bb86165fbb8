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
