"""``deepict run CONFIG``: the whole workflow over many tomograms, resumable and fault tolerant."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deepict_dask.cli.common import add_cluster_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole workflow (convert, filter, predict, pick, tables) on many tomograms",
        description=(
            "Run the workflow of a configuration file (write one with 'deepict init-config > run.yaml') on "
            "every input tomogram: convert to OME-Zarr, normalize / filter, predict with each model, pick "
            "particles with context rules, write tables; then summary and provenance, and the run-level "
            "stages: combined tables, evaluation (when ground truth is given) and an HTML report. Finished "
            "stages are recorded in "
            "RUN_DIR/manifest with an inventory of what they wrote, and skipped on a re-run unless their "
            "settings or inputs changed or an output is damaged (a file missing or of another size; "
            "--verify also re-reads every file): a damaged stage is recomputed with everything after it. A tomogram "
            "that fails is reported and skipped; the exit code is 1 if any failed, 2 for a bad config."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="run configuration (YAML)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="recompute STAGE (and what depends on it) even if done: convert, preprocess, predict, "
                        "predict:<model>, pick, pick:<target>, tables, the run-level combine, evaluate, report, "
                        "or all; repeatable")
    p.add_argument("-o", "--out", metavar="DIR", help="run directory (overrides output.dir of the config)")
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help="tomograms submitted at once (overrides execution.max_in_flight; default 2 per worker)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config and inputs, print what would run, and stop before any heavy work")
    p.add_argument("--verify", action="store_true",
                   help="re-hash every finished output before trusting it (slow: reads all of them); the default "
                        "check only looks at file sizes")
    p.add_argument("--overwrite", action="store_true",
                   help="use an output directory that holds other files (they may be replaced)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    add_cluster_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from deepict_dask.cluster import quiet_dask_logs

    quiet_dask_logs(logging.ERROR)  # the live progress display is the output
    from pathlib import Path

    from rich.console import Console

    from deepict_dask.cli.common import spec_from_args
    from deepict_dask.pipeline.config import load_config
    from deepict_dask.pipeline.progress import LineProgress, RichProgress, print_outcome
    from deepict_dask.pipeline.run import dry_run, run_workflow

    config = load_config(args.config)
    if args.out:
        config.output.dir = str(Path(args.out).resolve())
    if args.max_in_flight is not None:
        if args.max_in_flight < 1:
            from deepict_dask.errors import ConfigError

            raise ConfigError("--max-in-flight must be at least 1")
        config.execution.max_in_flight = args.max_in_flight
    console = Console(stderr=True)
    if args.dry_run:
        dry_run(config, force=args.force, console=Console(soft_wrap=True), verify=args.verify, overwrite=args.overwrite)
        return 0
    cluster = _cluster_override(args, spec_from_args)
    progress = None
    if not args.no_progress:
        progress = RichProgress(console) if sys.stderr.isatty() else LineProgress(console)
    result = run_workflow(config, force=args.force, cluster=cluster, progress=progress, verify=args.verify,
                          overwrite=args.overwrite)
    print_outcome(result, Console(soft_wrap=True))
    return result.exit_code


def _cluster_override(args: argparse.Namespace, spec_from_args: Any) -> Any:
    given = any(getattr(args, k, None) for k in ("scheduler", "cluster", "workers", "threads_per_worker",
                                                    "memory_limit", "jobs", "dashboard_address"))
    return spec_from_args(args) if given else None
