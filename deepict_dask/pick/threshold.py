"""From stored map values to probabilities, and from probabilities to a foreground mask.

Prediction maps are stored compactly: ``uint8`` holds ``probability * 255`` (``uint16``:
``* 65535``), floats hold the probability itself. The scale is explicit: an attribute
``probability_scale`` (or ``scale_factor``) on the volume wins over the dtype rule, so a map
written by another tool can say what its integers mean (``deepict predict`` records the multiplier
``prediction.scale``, e.g. 1/255).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deepict_dask.errors import InputError

_DTYPE_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_SCALE_ATTRS = ("probability_scale", "scale_factor")


def probability_scale(dtype: Any, attrs: Mapping[str, Any] | None = None) -> float:
    """The number a stored value is divided by to give a probability in [0, 1]."""
    pred = attrs.get("prediction") if attrs else None
    if isinstance(pred, Mapping) and pred.get("scale"):
        # written by ``deepict predict``: a multiplier (1/255 for uint8 maps)
        return 1.0 / float(pred["scale"])
    for key in _SCALE_ATTRS:
        if attrs and key in attrs:
            scale = float(attrs[key])
            if not scale > 0:
                raise InputError(f"attribute {key}={attrs[key]!r} must be a positive number")
            return scale
    dtype = np.dtype(dtype)
    if dtype in _DTYPE_SCALE:
        return _DTYPE_SCALE[dtype]
    if dtype.kind in "fiub":
        return 1.0
    raise InputError(f"a probability map must hold numbers, not {dtype}")


def to_probability(block: np.ndarray, scale: float) -> np.ndarray:
    """Stored values as float32 probabilities."""
    out = block.astype(np.float32, copy=scale != 1.0 or block.dtype != np.float32)
    if scale != 1.0:
        out *= np.float32(1.0 / scale)
    return out


def foreground(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels at or above ``threshold`` (DeePiCt keeps ``p >= t``)."""
    return prob >= np.float32(threshold)


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise InputError(f"threshold must lie in (0, 1], got {threshold}")
    return t


def check_value_range(vmin: float, vmax: float, has_nan: bool, source: str | None) -> None:
    """Raise when the map's probabilities (after scaling) are not in [0, 1]."""
    if has_nan:
        raise InputError("the probability map contains NaN values", source)
    tol = 1e-4
    if vmin < -tol or vmax > 1.0 + tol:
        raise InputError(
            f"values range from {vmin:.4g} to {vmax:.4g}; a probability map must lie in [0, 1] "
            "(store probabilities as float, or uint8 = probability * 255, or set the attribute "
            "'probability_scale')",
            source,
        )
