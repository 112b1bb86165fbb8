"""``deepict convert``: tomograms (MRC, Zarr, OME-Zarr) to multiscale OME-Zarr, or back to MRC."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deepict_dask.cli.common import (
    InputFailures,
    add_cluster_args,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    spec_from_args,
    unique_names,
)
from deepict_dask.cluster import dask_client
from deepict_dask.errors import ConfigError, DeepictError

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert tomograms to chunked multiscale OME-Zarr (or back to MRC)",
        description=(
            "Convert MRC/MRCS/REC/MAP tomograms (or Zarr / OME-Zarr images) to OME-Zarr images with a "
            "2x mean-downsampled pyramid, the voxel size as an Angstrom scale and the source file name and "
            "MRC header in the attributes. Output: OUT/<name>.ome.zarr (or OUT/<name>.mrc with --format mrc). "
            "Runs chunk by chunk on Dask, so memory stays bounded whatever the tomogram size. A bad input "
            "is reported and skipped; the exit code is 2 if any input failed."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tomograms: .mrc/.mrcs/.rec/.map/.st/.ali files or (OME-)Zarr directories")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--format", choices=["ome-zarr", "mrc"], default="ome-zarr", help="output format (default: ome-zarr)")
    p.add_argument("--chunks", default="128", metavar="N[,N,N]",
                   help="chunk edge in voxels, one value or three comma-separated (z,y,x) (default: 128: as fast to write "
                        "as 64 with 8x fewer files, and 5x faster than 256 for reading small regions)")
    p.add_argument("--levels", type=int, default=3, metavar="N", help="pyramid levels including full resolution (default: 3)")
    p.add_argument("--compressor", choices=["zstd", "lz4", "none"], default="zstd",
                   help="Blosc compressor for the chunks (default: zstd; lz4 is faster and compresses less)")
    p.add_argument("--ngff", choices=["0.4", "0.5"], default="0.4",
                   help="OME-NGFF version: 0.4 writes Zarr v2 (widest reader support, default), 0.5 writes Zarr v3")
    p.add_argument("--voxel-size", type=float, metavar="A",
                   help="voxel size in Angstrom, replacing the inputs' (required for headers without one)")
    p.add_argument("--group", metavar="PATH", help="for OME-Zarr inputs: the image group to read, e.g. predictions/unet")
    p.add_argument("--level", type=int, default=0, metavar="N", help="for OME-Zarr inputs: the pyramid level to read (default 0)")
    add_overwrite_arg(p)
    add_progress_arg(p)
    add_cluster_args(p)
    p.set_defaults(func=run)


def open_input(src: Path, args: argparse.Namespace) -> xr.DataArray:
    """Open (and so check) one input lazily; raises DeepictError on bad input."""
    from deepict_dask.io import is_zarr_path, open_volume

    # MRC is read in the output chunks (aligned, no rechunking); Zarr in its stored chunks.
    read_chunks = None if is_zarr_path(src) else _chunks(args)
    return open_volume(src, read_chunks, level=args.level, group=args.group, voxel_size=args.voxel_size)


def _chunks(args: argparse.Namespace) -> int | tuple[int, ...]:
    """``--chunks 128`` or ``--chunks 64,128,128``."""
    try:
        values = [int(v) for v in str(args.chunks).split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or min(values) < 1:
        raise ConfigError(f"--chunks takes one positive integer or three separated by commas (z,y,x), got {args.chunks!r}")
    return values[0] if len(values) == 1 else tuple(values)


def convert_one(src: Path, volume: xr.DataArray, out_dir: Path, args: argparse.Namespace) -> Path:
    """Write one opened input; returns the output path."""
    from deepict_dask import __version__
    from deepict_dask.io import tomogram_name, write_mrc, write_ome_zarr

    name = tomogram_name(src)
    if args.format == "mrc":
        return write_mrc(volume, out_dir / f"{name}.mrc", overwrite=args.overwrite)
    attrs = {"source_file": src.name, "converted_by": f"deepict-dask {__version__}"}
    target = write_ome_zarr(volume, out_dir / f"{name}.ome.zarr", levels=args.levels, chunks=_chunks(args),
                            compressor=args.compressor, overwrite=args.overwrite, attrs=attrs,
                            ngff_version=args.ngff)
    _warn_nonfinite(target)
    return target


def _warn_nonfinite(target: Path) -> None:
    """Report NaN/inf voxels found while writing (counted in the same pass, stored in the attributes)."""
    import zarr

    attrs = zarr.open_group(str(target), mode="r").attrs.asdict()
    n = int((attrs.get("deepict", {}).get("stats", {}) or {}).get("nonfinite", 0) or 0)
    if n:
        print(f"deepict convert: warning: {target}: {n} NaN/inf voxels in the input "
              "(kept as they are; filter or mask them before training or inference)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from deepict_dask.io import show_progress

    _chunks(args)
    if args.levels < 1:
        raise ConfigError("--levels must be at least 1")
    sources = [Path(p) for p in args.inputs]
    unique_names(sources)
    out_dir = Path(args.out)
    failures = InputFailures("convert", len(sources))
    opened = []
    for src in sources:  # check every header first: a bad input fails fast, before any cluster starts
        try:
            opened.append((src, open_input(src, args)))
        except DeepictError as exc:
            failures.report(exc)
    if opened:
        with dask_client(spec_from_args(args)), show_progress(progress_wanted(args)):
            for src, volume in opened:
                t0 = time.perf_counter()
                try:
                    target = convert_one(src, volume, out_dir, args)
                except DeepictError as exc:
                    failures.report(exc)
                    continue
                print(f"{src} -> {target} ({time.perf_counter() - t0:.1f} s)")
    return failures.exit_code()
