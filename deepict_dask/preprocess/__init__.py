"""Preprocessing: normalization and amplitude-spectrum equalization (DeePiCt's spectrum filter), on Dask."""

from deepict_dask.preprocess.equalize import (
    EqualizationFilter,
    apply_filter,
    choose_mode,
    equalization_filter,
    exact_equalize,
    lowpass,
)
from deepict_dask.preprocess.normalize import normalize, volume_stats
from deepict_dask.preprocess.spectrum import (
    default_target,
    radial_spectrum,
    read_spectrum,
    validate_spectrum,
    write_spectrum,
)

__all__ = [
    "EqualizationFilter",
    "apply_filter",
    "choose_mode",
    "default_target",
    "equalization_filter",
    "exact_equalize",
    "lowpass",
    "normalize",
    "radial_spectrum",
    "read_spectrum",
    "validate_spectrum",
    "volume_stats",
    "write_spectrum",
]
