"""``deepict labels``: paint a label volume from particle coordinates (spheres or oriented templates)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "labels",
        help="make a training label volume from coordinate tables and masks",
        description=(
            "Paint each particle of the coordinate table(s) as a sphere of its class's radius (or as the "
            "--template mask rotated by the particle's ZXZ Euler angles phi, theta, psi) into a label volume "
            "shaped like --like, chunk by chunk. Class ids are 1, 2, ... in the order given (--radius "
            "classes, then --mask classes) and are stored with the output (OME-Zarr attributes, or "
            "OUT.json beside an MRC). Overlaps: a voxel belongs to the particle whose centre is nearest "
            "relative to its radius; particles are painted over --mask classes."
        ),
    )
    p.add_argument("--coords", nargs="+", default=[], metavar="TABLE",
                   help="coordinate tables (.csv, .star, .json, .ndjson, .tbl, motive list, copick project)")
    p.add_argument("--like", required=True, metavar="TOMO",
                   help="tomogram whose shape, voxel size and origin the labels take (MRC or Zarr)")
    p.add_argument("--radius", nargs="+", default=[], metavar="CLASS=R",
                   help="sphere radius per class, in Angstrom (ribosome=120A) or voxels (fas=8 or fas=8vx)")
    p.add_argument("--template", metavar="MASK", help="binary particle mask (MRC/Zarr) pasted with each particle's orientation")
    p.add_argument("--template-threshold", type=float, metavar="T", help="binarise the template above T (default: half its maximum)")
    p.add_argument("--mask", nargs="+", default=[], metavar="CLASS=PATH",
                   help="existing masks (MRC/Zarr, non-zero = class) added as further classes, e.g. membrane=mem.mrc")
    p.add_argument("--tomo", help="use only table rows whose 'tomo' is this name (default: the --like file's stem "
                   "if the table names several tomograms)")
    p.add_argument("-o", "--out", required=True, help="output label volume: .zarr (OME-Zarr) or .mrc")
    p.add_argument("--chunks", type=int, default=128, metavar="N", help="chunk edge in voxels (default 128)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from deepict_dask.errors import ConfigError, OutputError
    from deepict_dask.io import open_volume, write_mrc, write_ome_zarr
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.io.table_checks import check_table
    from deepict_dask.io.tables import read_tables
    from deepict_dask.io.volume import spatial_shape, voxel_size_of
    from deepict_dask.train.labels import labels_volume, load_template, paint_labels, parse_radius

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputError("already exists (use --overwrite to replace it)", out)
    if not args.radius and not args.mask:
        raise ConfigError("nothing to paint: give --radius CLASS=R for the table's classes and/or --mask CLASS=PATH")
    like = open_volume(args.like)
    vs = float(np.mean(voxel_size_of(like)))
    radii = dict(parse_radius(r, vs) for r in args.radius)
    masks = {}
    for item in args.mask:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--mask entries look like membrane=mem.mrc, got {item!r}")
        masks[name] = open_volume(path)
    table = pd.DataFrame(columns=["class", "x", "y", "z"])
    if args.coords:
        if not radii:
            raise ConfigError("--coords needs --radius CLASS=R for each class to paint")
        table = read_tables(args.coords, voxel_size=voxel_size_of(like), shape=spatial_shape(like))
        tomo = args.tomo
        if tomo is None and table["tomo"].nunique() > 1:
            tomo = Path(args.like).name.split(".")[0]
        if tomo is not None:
            table = table[table["tomo"].astype(str) == tomo]
            if table.empty:
                raise ConfigError(f"no particles of tomogram '{tomo}' in the table(s) (use --tomo NAME)")
        # units that disagree are refused; particles whose centre lies outside are skipped (with a
        # warning), and a table with none inside is refused: it would paint nothing
        source = args.coords[0] if len(args.coords) == 1 else ", ".join(args.coords)
        inside = check_table(table, voxel_size=voxel_size_of(like), shape=spatial_shape(like), path=source,
                             require_inside=True)
        table = table[inside]
    template = load_template(args.template, args.template_threshold) if args.template else None
    data, ids = paint_labels(table, spatial_shape(like), vs, radii, template=template, masks=masks,
                             chunks=args.chunks)
    vol = labels_volume(data, like, ids, name="labels")
    if out.suffix.lower() in (".mrc", ".rec", ".map"):
        write_mrc(vol, out, overwrite=True)
        side = Path(str(out) + ".json")
        with atomic_path(side) as tmp:
            tmp.write_text(json.dumps({"class_ids": ids}, indent=2))
    else:
        write_ome_zarr(vol, out, levels=1, chunks=args.chunks, attrs={"class_ids": ids}, overwrite=True)
    n = len(table)
    skipped = int((~inside).sum()) if args.coords else 0
    note = f"; skipped {skipped} outside the volume" if skipped else ""
    print(f"painted {n} particles inside the volume ({', '.join(f'{k}={v}' for k, v in ids.items())}) into {out}{note}")
    return 0
