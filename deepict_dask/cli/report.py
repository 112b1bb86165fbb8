"""``deepict report RUN_DIR``: one self-contained HTML page with metrics, curves, orthoslices and tables."""

from __future__ import annotations

import argparse

from deepict_dask.cli.common import add_overwrite_arg, refuse_existing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a run directory",
        description="Collect the metrics JSON files, particle tables, spectra (.tsv) and OME-Zarr tomograms "
        "(with predictions/ and labels/) of RUN_DIR into one self-contained HTML file with inline "
        "images: PR and F1 curves, sweep heatmaps, orthoslices with picks coloured TP/FP/FN and "
        "segmentation contours. For a 'deepict run' directory the inputs (and the ground truth) are "
        "those its manifest records; other folders are searched, and tables named *truth* or *gt* (or in "
        "such a folder) are ground truth.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to report on")
    p.add_argument("-o", "--out", metavar="HTML", help="output HTML file (default RUN_DIR/report.html)")
    p.add_argument("--truth", nargs="+", metavar="TABLE", help="ground-truth tables outside the run directory")
    p.add_argument("--tolerance", type=float, help="matching radius for colouring picks (default: from a picks metrics file)")
    p.add_argument("--unit", choices=["vox", "A"], help="unit of --tolerance (default vox)")
    p.add_argument("--title", help="page title")
    p.add_argument("--max-images", type=int, default=20, help="at most this many tomograms get orthoslices (default 20)")
    add_overwrite_arg(p, "an existing report (such as the one 'deepict run' wrote)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepict_dask.evaluate.report import build_report
    from deepict_dask.layout import RunLayout
    from deepict_dask.pipeline.run_stages import recorded_report_inputs

    layout = RunLayout(args.run_dir)
    refuse_existing(args.out or layout.report, overwrite=args.overwrite)

    out = build_report(
        args.run_dir,
        args.out,
        truth=args.truth,
        tolerance=args.tolerance,
        unit=args.unit,
        title=args.title,
        max_images=args.max_images,
        files=recorded_report_inputs(layout.root) if layout.is_run_dir() else None,
    )
    print(f"wrote {out}")
    return 0
