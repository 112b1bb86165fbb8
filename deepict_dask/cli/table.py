"""``deepict table``: convert coordinate tables between formats (CSV, RELION STAR, copick, portal, motive list)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table",
        help="convert coordinate tables between formats",
        description=(
            "Read one or more coordinate tables (.csv project schema or DeePiCt motive list, .star RELION, "
            ".json copick, .ndjson CryoET Data Portal) and write them as one table in the format of --out."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="TABLE", help="input tables")
    p.add_argument("-o", "--out", required=True, help="output table; the suffix chooses the format (or use --format)")
    p.add_argument("--format", choices=["csv", "star", "json", "ndjson", "motl"], help="output format (default: from suffix)")
    p.add_argument("--in-format", choices=["csv", "star", "json", "ndjson", "motl"], help="input format (default: from suffix)")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="A", help="voxel size in Angstrom (1 value or z y x), for formats that do not record it")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="tomogram shape, for RELION 5 centred coordinates")
    p.add_argument("--tomo", help="tomogram name for formats that do not record it (motive lists, portal points)")
    p.add_argument("--class-map", nargs="+", metavar="N=NAME", help="motive-list class numbers to names, e.g. 1=ribosome 2=fas")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepict_dask.errors import ConfigError
    from deepict_dask.io.coords import read_tables, write_table

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
    df = read_tables(args.inputs, fmt=args.in_format, voxel_size=vs, shape=args.shape, tomo=args.tomo, class_names=names or None)
    ids = {v: k for k, v in names.items()} or None
    write_table(df, args.out, fmt=args.format, voxel_size=vs, shape=args.shape, class_ids=ids, overwrite=args.overwrite)
    print(f"wrote {len(df)} particles from {len(args.inputs)} table(s) to {args.out}")
    return 0
