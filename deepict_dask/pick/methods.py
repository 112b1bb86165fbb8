"""The clustering methods ``deepict pick --cluster`` offers (each module registers itself)."""

from __future__ import annotations

from deepict_dask.pick import (
    meanshift,  # noqa: F401  (registers "meanshift")
    peaks,  # noqa: F401  (registers "watershed" and "peaks")
)
from deepict_dask.pick.label import METHODS


def available_methods() -> list[str]:
    return sorted(METHODS)
