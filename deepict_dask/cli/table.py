"""``deepict table``: convert coordinate tables between formats (CSV, RELION STAR, copick, portal, motive list)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepict_dask.io.tables import TableContext, TableFormat


def formats() -> list[TableFormat]:
    """The registered table formats (a format module registered before the parser is built is one)."""
    from deepict_dask.io.tables import format_names, get_format

    return [get_format(name) for name in format_names()]


def format_choices() -> list[str]:
    return [f.name for f in formats()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table",
        help="convert coordinate tables between formats",
        description=(
            "Read one or more coordinate tables and write them as one table in the format of --out "
            "(its suffix, or --format). Coordinates are checked: x/y/z against x_A/y_A/z_A given "
            "--voxel-size, and against the volume given --shape. Formats: "
            + "; ".join(f"{f.name} ({', '.join(f.suffixes) or 'a directory'}): {f.description}" for f in formats())
            + ". A .csv file whose lines are 20 numbers is read as a motive list."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="TABLE", help="input tables")
    p.add_argument("-o", "--out", required=True, help="output table; the suffix chooses the format (or use --format)")
    p.add_argument("--format", choices=format_choices(), help="output format (default: from suffix)")
    p.add_argument("--in-format", choices=format_choices(), help="input format (default: from suffix)")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="A", help="voxel size in Angstrom (1 value or z y x), for formats that do not record it")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="tomogram shape, for RELION 5 centred coordinates (needed for them in .star output) "
                   "and to check that the particles lie inside")
    p.add_argument("--tilt-series-pixel-size", type=float, metavar="A",
                   help="tilt-series pixel size for RELION's rlnTomoTiltSeriesPixelSize in .star output "
                   "(default: assume the tomogram voxel size, with a warning)")
    p.add_argument("--tomo", help="tomogram name for formats that do not record it (motive lists, portal points)")
    p.add_argument("--class-map", nargs="+", metavar="N=NAME", help="motive-list class numbers to names, e.g. 1=ribosome 2=fas")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepict_dask.errors import ConfigError
    from deepict_dask.io.tables import TableContext
    from deepict_dask.io.tables.registry import convert_tables

    names: dict[int, str] = {}
    for item in args.class_map or []:
        num, sep, name = item.partition("=")
        if not sep or not num.strip().isdigit() or not name:
            raise ConfigError(f"--class-map entries look like 1=ribosome, got {item!r}")
        names[int(num)] = name
    vs = None
    if args.voxel_size:
        if len(args.voxel_size) not in (1, 3):
            raise ConfigError("--voxel-size takes 1 value or 3 (z y x)")
        vs = args.voxel_size[0] if len(args.voxel_size) == 1 else tuple(args.voxel_size)
    if args.tilt_series_pixel_size is not None and args.tilt_series_pixel_size <= 0:
        raise ConfigError("--tilt-series-pixel-size must be positive")
    ctx = TableContext(voxel_size=vs, shape=args.shape, tomo=args.tomo, class_names=names or None,
                       class_ids={v: k for k, v in names.items()} or None,
                       tilt_series_pixel_size=args.tilt_series_pixel_size)
    warn_missing_context(args, ctx)
    df = convert_tables(args.inputs, args.out, fmt=args.format, in_format=args.in_format, context=ctx,
                        overwrite=args.overwrite)
    print(f"wrote {len(df)} particles from {len(args.inputs)} table(s) to {args.out}")
    return 0


def warn_missing_context(args: argparse.Namespace, ctx: TableContext) -> None:
    """Warn when the output format wants an option that was not given (what the output lacks without it)."""
    import logging

    from deepict_dask.errors import InputError
    from deepict_dask.io.tables.registry import format_of_new, missing_context

    try:
        fmt = format_of_new(args.out, args.format)
    except InputError:
        return  # writing names the problem
    for option, loss in missing_context(fmt, ctx).items():
        logging.getLogger(__name__).warning("%s: no --%s, so %s", args.out, option.replace("_", "-"), loss)
