"""``deepict init-config``: print a commented example run configuration."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-config",
        help="write a commented example configuration for 'deepict run'",
        description="Print (or write with -o) a commented example configuration for 'deepict run'; "
                    "edit it, then 'deepict run run.yaml'. Every key is explained in the comments.",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output (refuses to overwrite)")
    p.add_argument("--inputs", default="tomograms/*.mrc", metavar="GLOB", help="input pattern to put in (default: tomograms/*.mrc)")
    p.add_argument("--out", default="deepict_out", metavar="DIR", help="run directory to put in (default: deepict_out)")
    p.add_argument("--voxel-size", type=float, metavar="A", help="expected voxel size in Angstrom (default: the first file's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.pipeline.example import example_config

    name = Path(args.output).name if args.output else "run.yaml"
    text = example_config(inputs=args.inputs, out=args.out, voxel_size=args.voxel_size, config_name=name)
    if not args.output:
        print(text, end="")
        return 0
    with atomic_path(args.output, overwrite=False) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.output}; edit it, then: deepict run {args.output}")
    return 0
