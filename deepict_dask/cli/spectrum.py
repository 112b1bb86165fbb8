"""``deepict spectrum``: the radial amplitude spectrum of a reference tomogram, as a target TSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepict_dask.cli.common import (
    add_cluster_args,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    refuse_existing,
    spec_from_args,
)
from deepict_dask.cluster import dask_client
from deepict_dask.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "spectrum",
        help="radially averaged amplitude spectrum of a tomogram (target for 'deepict filter')",
        description=(
            "Normalize a reference tomogram (mean 0, variance 1) and write its radially averaged Fourier "
            "amplitude spectrum (RMS amplitude per frequency shell) as a TSV with columns freq_inv_A, "
            "freq_nyquist, amplitude. Pick a high-contrast tomogram: 'deepict filter --target' makes other "
            "tomograms look like it. Tomograms that fit a worker's memory get the exact whole-volume "
            "spectrum; larger ones a Welch estimate (average over tapered, half-overlapping sub-volumes)."
        ),
    )
    p.add_argument("reference", metavar="REF", help="reference tomogram: MRC/REC file or (OME-)Zarr directory")
    p.add_argument("-o", "--out", required=True, metavar="TSV", help="output spectrum file (.tsv)")
    p.add_argument("--method", choices=["auto", "exact", "welch"], default="auto",
                   help="exact: one FFT of the whole volume; welch: average over sub-volumes (bounded memory); "
                   "auto: exact when the volume fits in one window, else welch (default)")
    p.add_argument("--window", type=int, default=128, metavar="N",
                   help="Welch sub-volume edge in voxels (default 128; sets the frequency resolution)")
    p.add_argument("--group", metavar="PATH", help="for OME-Zarr inputs: the image group to read")
    p.add_argument("--level", type=int, default=0, metavar="N", help="for OME-Zarr inputs: the pyramid level to read (default 0)")
    add_overwrite_arg(p, "an existing spectrum file")
    add_progress_arg(p)
    add_cluster_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepict_dask.io import open_volume
    from deepict_dask.io.progress import show_progress
    from deepict_dask.preprocess import normalize, radial_spectrum, write_spectrum

    if args.window < 4:
        raise ConfigError("--window must be at least 4 voxels")
    refuse_existing(args.out, overwrite=args.overwrite)
    volume = open_volume(Path(args.reference), level=args.level, group=args.group)
    with dask_client(spec_from_args(args)), show_progress(progress_wanted(args)):
        spec = radial_spectrum(normalize(volume), method=args.method, window=args.window)
    out = write_spectrum(spec, args.out)
    print(f"{args.reference} -> {out} ({len(spec)} shells, {spec.attrs.get('method')} spectrum, "
          f"Nyquist {spec['freq_inv_A'].iloc[-1]:.4g} 1/A)")
    return 0
