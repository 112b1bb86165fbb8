"""``deepict filter``: normalize tomograms and equalize their amplitude spectra to a target."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deepict_dask.cli.common import (
    InputFailures,
    add_cluster_args,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    refuse_existing,
    spec_from_args,
    unique_names,
)
from deepict_dask.cli.options_flags import add_option_flags, option_values
from deepict_dask.cluster import dask_client
from deepict_dask.errors import ConfigError, DeepictError
from deepict_dask.options import build
from deepict_dask.preprocess.options import FilterOptions

MODES = ["auto", "exact", "blockwise", "normalize"]
FIELD_FLAGS = {
    "lowpass_cutoff": "--lowpass-cutoff", "lowpass_width": "--lowpass-width", "halo": "--halo",
    "halo_energy": "--halo-energy", "max_halo": "--max-halo", "block_size": "--block-size",
    "spectrum_method": "--spectrum-method",
}
"""FilterOptions fields whose flags are made from the model (type, choices, default)."""
METAVARS = {"lowpass_cutoff": "F", "lowpass_width": "W", "halo": "N", "halo_energy": "E", "max_halo": "N",
            "block_size": "N"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "filter",
        help="normalize tomograms and match their amplitude spectrum to a target (DeePiCt's spectrum filter)",
        description=(
            "For every tomogram: normalize to mean 0 and variance 1, measure its radial amplitude spectrum, "
            "and filter it so that its spectrum matches the target (gain = target / input, times a sigmoid "
            "low-pass), as DeePiCt does before its networks. Without --target the spectrum shipped with "
            "the package (a synthetic high-contrast tomogram at 5 A/voxel) is used. Output: "
            "OUT/<name>.ome.zarr with the same voxel size, a pyramid, and the filter parameters and target "
            "spectrum in its attributes. A bad input is reported and skipped (exit code 2)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="TOMO", help="tomograms: MRC/REC files or (OME-)Zarr directories")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--target", metavar="TSV", help="target spectrum from 'deepict spectrum' (default: the shipped one)")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="exact: one whole-volume FFT per tomogram (needs it in one worker's memory); blockwise: "
                   "overlap-save convolution chunk by chunk (bounded memory); auto: exact when it fits the "
                   "smallest worker's memory limit (default); normalize: only normalize, no filter")
    p.add_argument("--normalize-only", action="store_true", help="same as --mode normalize")
    add_option_flags(p, FilterOptions, FIELD_FLAGS, metavar=METAVARS, help={
        "lowpass_cutoff": "low-pass cutoff as a fraction of Nyquist, where the sigmoid is 1/2, in (0, 1] "
                          "(default %(default)s)",
        "lowpass_width": "sigmoid width as a fraction of Nyquist, in [0, 1]; 0 = hard cutoff (default %(default)s; "
                         "sharper needs a larger halo in blockwise mode)",
        "halo": "blockwise: kernel half-width in voxels (default: from --halo-energy)",
        "halo_energy": "blockwise: fraction of the kernel's energy the halo must hold (default %(default)s, "
                       "about 0.3%% RMS difference to exact)",
        "max_halo": "blockwise: largest automatic halo (default %(default)s)",
        "block_size": "blockwise: block edge in voxels, at least 8 (default %(default)s)",
        "spectrum_method": "blockwise: how the input spectrum is measured (default auto: Welch, bounded memory; "
                           "exact: one whole-volume FFT)",
    })
    p.add_argument("--no-lowpass", action="store_true", help="no low-pass: match the spectrum up to Nyquist")
    p.add_argument("--levels", type=int, metavar="N",
                   help="pyramid levels of the output (default: as many as an OME-Zarr input has, else 3)")
    p.add_argument("--chunks", type=int, default=128, metavar="N", help="output chunk edge in voxels (default 128)")
    p.add_argument("--plot", action="store_true",
                   help="also write OUT/<name>.spectrum.png with the input, target and output spectra")
    p.add_argument("--group", metavar="PATH", help="for OME-Zarr inputs: the image group to read")
    add_overwrite_arg(p)
    add_progress_arg(p)
    add_cluster_args(p)
    p.set_defaults(func=run)


FLAGS = {**FIELD_FLAGS, "enabled": "--mode", "target": "--target", "mode": "--mode"}
"""FilterOptions field -> the flag that sets it, so an error names both."""


def options_from_args(args: argparse.Namespace) -> FilterOptions:
    """The :class:`FilterOptions` the command line asks for (one ConfigError naming flag and field)."""
    normalize_only = args.normalize_only or args.mode == "normalize"
    values = option_values(args, FIELD_FLAGS) | {"enabled": not normalize_only}
    if args.no_lowpass:
        values["lowpass_cutoff"] = None
    if not normalize_only:
        values["mode"] = args.mode
    if args.target:
        values["target"] = args.target
    return build(FilterOptions, values, flags=FLAGS)


def _check_output_args(args: argparse.Namespace) -> None:
    if args.chunks < 1:
        raise ConfigError(f"--chunks must be at least 1, got {args.chunks}")
    if args.levels is not None and args.levels < 1:
        raise ConfigError("--levels must be at least 1")


def run(args: argparse.Namespace) -> int:
    from deepict_dask.io import open_volume
    from deepict_dask.io.progress import show_progress
    from deepict_dask.preprocess import default_target, filter_to_zarr, plot_spectra, read_spectrum

    options = options_from_args(args)
    _check_output_args(args)
    sources = [Path(p) for p in args.inputs]
    names = unique_names(sources)
    target = None
    if options.enabled:
        target = read_spectrum(options.target_path) if options.target_path else default_target()
    out_dir = Path(args.out)
    failures = InputFailures("filter", len(sources))
    opened = []
    for src, name in zip(sources, names):  # open every input first: bad headers fail before any compute
        out_path = out_dir / f"{name}.ome.zarr"
        try:
            refuse_existing(out_path, overwrite=args.overwrite)
            opened.append((src, open_volume(src, group=args.group), out_path))
        except DeepictError as exc:
            failures.report(exc)
    if opened:
        with dask_client(spec_from_args(args)), show_progress(progress_wanted(args)):
            for src, volume, out_path in opened:
                t0 = time.perf_counter()
                try:
                    written = filter_to_zarr(volume, out_path, options, target=target, levels=args.levels,
                                             chunks=args.chunks, overwrite=args.overwrite)
                    if args.plot:
                        png = plot_spectra(volume, target, written, out_dir / f"{out_path.name[:-9]}.spectrum.png",
                                           options)
                        print(f"{src}: spectra plotted in {png}")
                except DeepictError as exc:
                    failures.report(exc)
                    continue
                mode = options.mode if options.enabled else "normalize"
                print(f"{src} -> {written} ({mode}, {time.perf_counter() - t0:.1f} s)")
    return failures.exit_code()
