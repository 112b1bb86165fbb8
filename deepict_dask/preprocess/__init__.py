"""Preprocessing: normalization and amplitude-spectrum equalization (DeePiCt's spectrum filter), on Dask."""

from deepict_dask.preprocess.equalize import (
    EqualizationFilter,
    apply_filter,
    choose_mode,
    equalization_filter,
    exact_equalize,
    lowpass,
)
from deepict_dask.preprocess.files import filter_to_zarr, plot_spectra
from deepict_dask.preprocess.normalize import normalize, volume_stats
from deepict_dask.preprocess.options import FilterOptions
from deepict_dask.preprocess.spectrum import (
    default_target,
    radial_spectrum,
    read_spectrum,
    validate_spectrum,
    write_spectrum,
)

__all__ = [
    "EqualizationFilter",
    "FilterOptions",
    "apply_filter",
    "choose_mode",
    "default_target",
    "equalization_filter",
    "exact_equalize",
    "filter_to_zarr",
    "lowpass",
    "normalize",
    "plot_spectra",
    "radial_spectrum",
    "read_spectrum",
    "validate_spectrum",
    "volume_stats",
    "write_spectrum",
]
