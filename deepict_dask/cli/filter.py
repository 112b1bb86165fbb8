"""``deepict filter``: normalize tomograms and equalize their amplitude spectra to a target."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from deepict_dask.cli.common import (
    InputFailures,
    add_cluster_args,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    refuse_existing,
    unique_names,
)
from deepict_dask.cluster import dask_client, spec_from_args
from deepict_dask.errors import ConfigError, DeepictError

MODES = ["auto", "exact", "blockwise", "normalize"]


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
    p.add_argument("--lowpass-cutoff", type=float, default=0.5, metavar="F",
                   help="low-pass cutoff as a fraction of Nyquist, where the sigmoid is 1/2 (default 0.5)")
    p.add_argument("--lowpass-width", type=float, default=0.05, metavar="W",
                   help="sigmoid width as a fraction of Nyquist; 0 = hard cutoff (default 0.05; sharper "
                   "needs a larger halo in blockwise mode)")
    p.add_argument("--no-lowpass", action="store_true", help="no low-pass: match the spectrum up to Nyquist")
    p.add_argument("--halo", type=int, metavar="N",
                   help="blockwise: kernel half-width in voxels (default: from --halo-energy)")
    p.add_argument("--halo-energy", type=float, default=0.99999, metavar="E",
                   help="blockwise: fraction of the kernel's energy the halo must hold (default 0.99999, "
                   "about 0.3%% RMS difference to exact)")
    p.add_argument("--max-halo", type=int, default=48, metavar="N", help="blockwise: largest automatic halo (default 48)")
    p.add_argument("--block-size", type=int, default=128, metavar="N", help="blockwise: block edge in voxels (default 128)")
    p.add_argument("--spectrum-method", choices=["auto", "exact", "welch"], default="auto",
                   help="blockwise: how the input spectrum is measured (default auto: Welch, bounded memory; exact: one whole-volume FFT)")
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


def _check_args(args: argparse.Namespace) -> None:
    if args.normalize_only:
        args.mode = "normalize"
    if not 0 < args.lowpass_cutoff <= 2:
        raise ConfigError("--lowpass-cutoff must be in (0, 2] (a fraction of Nyquist)")
    if args.lowpass_width < 0:
        raise ConfigError("--lowpass-width must be >= 0")
    if args.halo is not None and args.halo < 0:
        raise ConfigError("--halo must be >= 0")
    if not 0 < args.halo_energy <= 1:
        raise ConfigError("--halo-energy must be in (0, 1]")
    if args.block_size < 8 or args.chunks < 1 or args.max_halo < 1:
        raise ConfigError("--block-size must be >= 8, --chunks and --max-halo >= 1")
    if args.levels is not None and args.levels < 1:
        raise ConfigError("--levels must be at least 1")


def filter_one(volume: Any, target: Any, out_path: Path, args: argparse.Namespace) -> Path:
    """Normalize (and equalize) one opened tomogram and write it; returns the output path."""
    from deepict_dask import __version__
    from deepict_dask.io import write_ome_zarr
    from deepict_dask.preprocess import apply_filter, normalize

    if args.mode == "normalize":
        result = normalize(volume)
    else:
        result = apply_filter(
            volume, target, mode=args.mode, lowpass_cutoff=None if args.no_lowpass else args.lowpass_cutoff,
            lowpass_width=args.lowpass_width, halo=args.halo, halo_energy=args.halo_energy,
            max_halo=args.max_halo, block_size=args.block_size, spectrum_method=args.spectrum_method,
        )
    levels = args.levels or int(volume.attrs.get("levels") or 3)
    attrs = {"filtered_by": f"deepict-dask {__version__} filter --mode {args.mode}"}
    return write_ome_zarr(result, out_path, levels=levels, chunks=args.chunks, overwrite=args.overwrite, attrs=attrs)


def plot_spectra(volume: Any, target: Any, written: Path, png: Path, args: argparse.Namespace) -> Path:
    """PNG of the input (normalized), target and output spectra against frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepict_dask.io import open_volume, voxel_size_of
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.preprocess import normalize, radial_spectrum

    nyquist = 1.0 / (2.0 * max(voxel_size_of(volume)))
    curves = [("input (normalized)", radial_spectrum(normalize(volume)), "tab:blue")]
    if target is not None:
        curves.append(("target", target, "tab:orange"))
    curves.append(("output", radial_spectrum(open_volume(written)), "tab:green"))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, spec, color in curves:
        f = spec["freq_inv_A"].to_numpy()
        keep = (f > 0) & (f <= nyquist * 1.0001)
        ax.semilogy(f[keep] / nyquist, spec["amplitude"].to_numpy()[keep], label=label, color=color, lw=1.4)
    if args.mode != "normalize" and not args.no_lowpass:
        ax.axvline(args.lowpass_cutoff, color="0.5", ls="--", lw=1, label=f"low-pass cutoff {args.lowpass_cutoff:g}")
    ax.set_xlabel(f"frequency / Nyquist (Nyquist = {nyquist:.4g} 1/A)")
    ax.set_ylabel("radial RMS amplitude")
    ax.set_title(Path(str(volume.attrs.get("source", written.name))).name, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png


def run(args: argparse.Namespace) -> int:
    from deepict_dask.io import open_volume
    from deepict_dask.io.progress import show_progress
    from deepict_dask.preprocess import default_target, read_spectrum

    _check_args(args)
    sources = [Path(p) for p in args.inputs]
    names = unique_names(sources)
    target = None
    if args.mode != "normalize":
        target = read_spectrum(args.target) if args.target else default_target()
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
                    written = filter_one(volume, target, out_path, args)
                    if args.plot:
                        png = plot_spectra(volume, target, written, out_dir / f"{out_path.name[:-9]}.spectrum.png", args)
                        print(f"{src}: spectra plotted in {png}")
                except DeepictError as exc:
                    failures.report(exc)
                    continue
                print(f"{src} -> {written} ({args.mode}, {time.perf_counter() - t0:.1f} s)")
    return failures.exit_code()
