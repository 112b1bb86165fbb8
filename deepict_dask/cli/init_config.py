"""``deepict init-config``: print a commented example run configuration."""

from __future__ import annotations

import argparse

from deepict_dask.cli.common import add_deprecated_alias, add_overwrite_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-config",
        help="write a commented example configuration for 'deepict run'",
        description="Print (or write with -o) a commented example configuration for 'deepict run'; "
                    "edit it, then 'deepict run run.yaml'. Every key is explained in the comments.",
    )
    p.add_argument("-o", "--out", metavar="FILE.yaml",
                   help="write to FILE.yaml instead of standard output (refuses to overwrite)")
    add_deprecated_alias(p, "--output", "-o/--out", dest="out")
    p.add_argument("--inputs", default="tomograms/*.mrc", metavar="GLOB", help="input pattern to put in (default: tomograms/*.mrc)")
    p.add_argument("--run-dir", default="deepict_out", metavar="DIR",
                   help="run directory to put in (output.dir; default: deepict_out)")
    p.add_argument("--voxel-size", type=float, metavar="A", help="expected voxel size in Angstrom (default: the first file's)")
    add_overwrite_arg(p, "an existing configuration file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepict_dask.errors import ConfigError
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.pipeline.example import example_config

    if args.out and Path(args.out).suffix.lower() not in (".yaml", ".yml"):
        # --out used to name the run directory; a YAML suffix tells an old script from a new one
        raise ConfigError(f"-o/--out is the configuration file to write and must end in .yaml, got {args.out!r} "
                          "(the run directory to put in is now --run-dir)")
    name = Path(args.out).name if args.out else "run.yaml"
    text = example_config(inputs=args.inputs, out=args.run_dir, voxel_size=args.voxel_size, config_name=name)
    if not args.out:
        print(text, end="")
        return 0
    with atomic_path(args.out, overwrite=args.overwrite) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.out}; edit it, then: deepict run {args.out}")
    return 0
