"""Filter tomograms into OME-Zarr stores and plot their spectra: what ``deepict filter`` does per input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr

from deepict_dask.preprocess.options import FilterOptions


def filter_to_zarr(volume: xr.DataArray, out_path: str | Path, options: FilterOptions, *,
                   target: pd.DataFrame | None = None, levels: int | None = None, chunks: int = 128,
                   overwrite: bool = False) -> Path:
    """Normalize (and equalize) one opened tomogram and write it as OME-Zarr.

    Parameters
    ----------
    volume
        The tomogram, from ``open_volume``.
    out_path
        The ``.ome.zarr`` store to write (atomically; an existing one only with ``overwrite``).
    options
        The filter's settings; ``enabled=False`` only normalizes.
    target
        The target spectrum, read once by a caller that filters many tomograms (default:
        ``options.target``).
    levels
        Pyramid levels (default: as many as an OME-Zarr input has, else 3).
    chunks
        Chunk edge in voxels.

    Returns
    -------
    Path
        The written store.
    """
    from deepict_dask import __version__
    from deepict_dask.io import write_ome_zarr
    from deepict_dask.preprocess.equalize import apply_filter

    result = apply_filter(volume, options, target=target)
    levels = levels or int(volume.attrs.get("levels") or 3)
    mode = options.mode if options.enabled else "normalize"
    attrs = {"filtered_by": f"deepict-dask {__version__} filter --mode {mode}"}
    return write_ome_zarr(result, Path(out_path), levels=levels, chunks=chunks, overwrite=overwrite, attrs=attrs)


def plot_spectra(volume: xr.DataArray, target: pd.DataFrame | None, written: str | Path, png: str | Path,
                 options: FilterOptions) -> Path:
    """PNG of the input (normalized), target and output spectra against frequency / Nyquist.

    Parameters
    ----------
    volume
        The input tomogram.
    target
        The target spectrum (``None``: not drawn).
    written
        The filtered store (from :func:`filter_to_zarr`).
    png
        The image to write (atomically).
    options
        The settings used, for the low-pass cutoff line.

    Returns
    -------
    Path
        ``png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepict_dask.io import open_volume, voxel_size_of
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.preprocess.normalize import normalize
    from deepict_dask.preprocess.spectrum import radial_spectrum

    written, png = Path(written), Path(png)
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
    if options.enabled and options.lowpass_cutoff is not None:
        cutoff = options.lowpass_cutoff
        ax.axvline(cutoff, color="0.5", ls="--", lw=1, label=f"low-pass cutoff {cutoff:g}")
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
