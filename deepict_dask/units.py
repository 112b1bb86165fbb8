"""Lengths with their unit: one type and one parser for every distance a user writes.

A user may give a length in Angstrom or in voxels: ``40A`` (also ``40Å``, ``40 angstrom``), ``4vx``
(also ``4vox``, ``4 voxels``) or a plain number, which means Angstrom unless the caller states
another default. A :class:`Length` keeps the unit it was written in until a voxel size is known,
because a config is read before any tomogram is opened and one config serves tomograms of
different voxel sizes.

In pydantic models use the annotated type :data:`LengthField` (serialises as ``"40A"``/``"4vx"``, so
hashes of options and the manifest stay plain JSON).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PlainSerializer

Unit = Literal["A", "vx"]

_LENGTH_RE = re.compile(
    r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(a|å|angstroms?|vx|vox|voxels?)?\s*", re.IGNORECASE
)


@dataclass(frozen=True)
class Length:
    """A non-negative length in Angstrom (``unit="A"``) or voxels (``unit="vx"``)."""

    value: float
    unit: Unit = "A"

    def __post_init__(self) -> None:
        if not self.value >= 0:  # also refuses NaN
            raise ValueError(f"a length must not be negative, got {self.value!r}")
        if self.unit not in ("A", "vx"):
            raise ValueError(f"unknown length unit {self.unit!r}; use 'A' or 'vx'")

    def angstrom(self, voxel_size: float | Sequence[float]) -> float:
        """The length in Angstrom; voxels convert with the x voxel size (tomograms are isotropic)."""
        return self.value if self.unit == "A" else self.value * _x_size(voxel_size)

    def voxels(self, voxel_size: float | Sequence[float]) -> float:
        """The length in voxels of ``voxel_size`` (Angstrom; the x size when given z, y, x)."""
        return self.value if self.unit == "vx" else self.value / _x_size(voxel_size)

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"


def _x_size(voxel_size: float | Sequence[float]) -> float:
    size = float(voxel_size if isinstance(voxel_size, (int, float)) else voxel_size[-1])
    if not size > 0:
        raise ValueError(f"voxel size must be positive, got {size!r}")
    return size


def parse_length(value: Length | float | str, default_unit: Unit = "A") -> Length:
    """A :class:`Length` from ``40``, ``'40'``, ``'40A'``, ``'4vx'`` or a Length; bare numbers take ``default_unit``.

    Raises ``ValueError`` with a message fit for the user (pydantic and the CLI add where it came from).
    """
    if isinstance(value, Length):
        return value
    if isinstance(value, bool):
        raise ValueError(f"cannot read the length {value!r}; write e.g. 40A (Angstrom) or 4vx (voxels)")
    if isinstance(value, (int, float)):
        return Length(float(value), default_unit)
    if isinstance(value, str):
        m = _LENGTH_RE.fullmatch(value)
        if m:
            unit = m.group(2)
            resolved: Unit = default_unit if not unit else ("vx" if unit.lower().startswith("v") else "A")
            return Length(float(m.group(1)), resolved)
    raise ValueError(f"cannot read the length {value!r}; write e.g. 40A (Angstrom) or 4vx (voxels)")


def _validate(value: Any) -> Length:
    return parse_length(value, "A")


LengthField = Annotated[Length, BeforeValidator(_validate), PlainSerializer(str, return_type=str)]
"""A pydantic field type: accepts ``40``, ``"40A"``, ``"4vx"``; stores a :class:`Length`; dumps ``"40A"``."""
