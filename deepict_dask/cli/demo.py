"""``deepict demo``: simulated tomograms -> full workflow with the shipped models -> evaluation and report."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate tomograms and run the whole workflow on them with the shipped demo models",
        description=(
            "Simulate a few cell-like tomograms with known particles, run the full workflow (convert, "
            "normalize, 2D and 3D predictions with the shipped demo models, picking with context, tables) "
            "on an embedded Dask LocalCluster, evaluate the picks against the simulated truth and write the "
            "HTML report. Prints where everything is and the F1 reached. Re-running resumes."
        ),
    )
    p.add_argument("-o", "--out", default="demo_out", metavar="DIR", help="output directory (default: demo_out)")
    p.add_argument("--n", type=int, default=3, metavar="N", help="tomograms to simulate (default: 3)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="tomogram shape in voxels (default: 96 192 192)")
    p.add_argument("--seed", type=int, default=200, help="first simulation seed (default 200; 101-104 trained the models)")
    p.add_argument("--workers", type=int, metavar="N", help="LocalCluster workers (default: one per core)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute STAGE (see deepict run)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from deepict_dask.cluster import quiet_dask_logs

    quiet_dask_logs(logging.ERROR)  # the live progress display is the output
    from rich.console import Console

    from deepict_dask.pipeline.demo import DEMO_SHAPE, mask_scores, run_demo
    from deepict_dask.pipeline.progress import LineProgress, RichProgress, print_outcome

    err = Console(stderr=True)
    progress = None
    if not args.no_progress:
        progress = RichProgress(err) if sys.stderr.isatty() else LineProgress(err)
    result = run_demo(args.out, n=args.n, shape=tuple(args.shape or DEMO_SHAPE), seed=args.seed,
                      workers=args.workers, progress=progress, force=args.force)
    out = Console(soft_wrap=True)  # result lines stay whole when stdout is a file
    print_outcome(result, out)
    ev = result.evaluation or {}
    if "f1" in ev:
        out.print(f"[bold]Demo F1 (picks vs simulated truth): {ev['f1']:.3f}[/]  -- open {result.outputs.get('report')}")
    done = [name for name, o in result.outcomes.items() if o.status == "done"]
    if done:
        masks = mask_scores(result.run_dir, result.run_dir.parent / "data", sorted(done))
        out.print("Demo voxel F1 (masks vs simulated truth): "
                  + ", ".join(f"{k} {v['voxel_f1']:.3f}" for k, v in masks.items()))
    out.print(f"Re-run or change settings: deepict run {result.run_dir.parent / 'run.yaml'}")
    return result.exit_code
