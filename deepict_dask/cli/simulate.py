"""``deepict simulate``: synthetic cell-like tomograms with ground truth."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate cryo-ET tomograms with ground-truth tables and masks",
        description=(
            "Simulate cell-like cryo-ET tomograms (particles, membranes, filaments, CTF, missing wedge, "
            "noise) with ground truth. Writes, per tomogram: tomograms/NAME.mrc, labels/NAME_classes.mrc, "
            "labels/NAME_instances.mrc, labels/NAME_membranes.mrc, labels/NAME_compartments.mrc, "
            "tables/NAME_particles.csv, tables/NAME_filaments.csv, tables/NAME_fiducials.csv, meta/NAME.json; "
            "and particles.csv (all tomograms). Protein is dark in the tomograms."
        ),
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--n", type=int, default=1, metavar="N", help="number of tomograms (seeds SEED..SEED+N-1; default 1)")
    p.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256], metavar=("Z", "Y", "X"),
                   help="tomogram shape in voxels (default 128 256 256)")
    p.add_argument("--voxel-size", type=float, default=13.48, metavar="A", help="voxel size in Angstrom (default 13.48)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the first tomogram (default 0)")
    p.add_argument("--preset", default="cell", help="content preset: cell (default), crowded, particles")
    p.add_argument("--imaging", default="defocus", help="imaging preset: defocus (default) or vpp")
    p.add_argument("--format", dest="fmt", choices=["mrc", "zarr"], default="mrc", help="volume format (default mrc)")
    p.add_argument("--name", default="sim", help="name prefix; tomogram i is PREFIX_<seed> (default sim)")
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="particle classes to include (default: all four)")
    p.add_argument("--count", action="append", default=[], metavar="CLASS=N",
                   help="exact number of particles of a class (repeatable), e.g. --count ribosome=200")
    p.add_argument("--crowded", type=float, metavar="FRACTION", help="ribosome volume fraction of the cytosol, e.g. 0.1")
    p.add_argument("--snr", type=float, help="signal-to-noise ratio (variance ratio in the ice; preset default)")
    p.add_argument("--defocus", type=float, metavar="UM", help="defocus in micrometres (underfocus positive)")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="tilt range in degrees (default -60 60)")
    p.add_argument("--no-ctf", action="store_true", help="skip the CTF")
    p.add_argument("--no-wedge", action="store_true", help="skip the missing wedge")
    p.add_argument("--blockwise", action="store_true", help="render blockwise with dask even for small shapes")
    p.add_argument("--chunks", type=int, default=128, help="block size for blockwise rendering (default 128)")
    p.add_argument("--preview", action="store_true", help="also write previews/NAME.png (orthoslices with masks)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict:
    from deepict_dask.errors import ConfigError

    o: dict = {}
    if args.classes:
        o["classes"] = tuple(args.classes)
    if args.count:
        counts = {}
        for item in args.count:
            k, sep, v = item.partition("=")
            try:
                counts[k] = int(v)
            except ValueError:
                sep = ""
            if not sep:
                raise ConfigError(f"--count expects CLASS=N, got {item!r}")
        o["counts"] = counts
    if args.crowded is not None:
        o["crowded"] = args.crowded
    if args.snr is not None:
        o["snr"] = args.snr
    if args.defocus is not None:
        o["defocus_um"] = args.defocus
    if args.tilt_range:
        o["tilt_min"], o["tilt_max"] = args.tilt_range
    if args.no_ctf:
        o["ctf"] = False
    if args.no_wedge:
        o["missing_wedge"] = False
    return o


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from deepict_dask.errors import ConfigError, OutputError
    from deepict_dask.io.tables import write_table
    from deepict_dask.simulate import output_paths, write_preview, write_simulation
    from deepict_dask.simulate.presets import resolve
    from deepict_dask.simulate.tomogram import plan_tomogram, render_tomogram

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    overrides = _overrides(args)
    resolve(args.preset, args.imaging, overrides)  # fail on bad options before anything is written
    out = Path(args.out)
    names = [f"{args.name}_{args.seed + i:04d}" for i in range(args.n)]
    if not args.overwrite:
        for name in names:
            for p in output_paths(out, name, args.fmt).values():
                if p.exists():
                    raise OutputError("already exists (use --overwrite to replace it)", p)
    # Lay out every scene first (placement is cheap) so that a volume that cannot hold the requested
    # particles fails before anything is written.
    plans = [plan_tomogram(tuple(args.shape), args.voxel_size, args.seed + i, args.preset, imaging=args.imaging,
                           **overrides) for i in range(args.n)]
    tables = []
    for (scene, img), name in zip(plans, names):
        sim = render_tomogram(scene, img, preset=args.preset, imaging=args.imaging, name=name,
                              blockwise=True if args.blockwise else None, chunks=args.chunks)
        write_simulation(sim, out, name, fmt=args.fmt)
        if args.preview:
            write_preview(sim, out / "previews" / f"{name}.png")
        tables.append(sim.table)
        counts = ", ".join(f"{k} {v}" for k, v in sim.table["class"].value_counts().items())
        print(f"{name}: {'x'.join(map(str, args.shape))} at {args.voxel_size:g} A: {counts or 'no particles'}")
    write_table(pd.concat(tables, ignore_index=True), out / "particles.csv")
    print(f"wrote {len(names)} tomogram(s) to {out}")
    return 0
