"""Test-time augmentation that respects the missing wedge.

Tomograms are reconstructed from a tilt series about the Y axis with the beam along Z, so Fourier
space lacks a wedge of directions around the kz axis in the (kx, kz) plane (beyond the maximum
tilt angle), extended along ky. Flipping x, y or z maps
(kx, ky, kz) to sign-flipped copies, and the wedge is symmetric under each sign flip, so every
flip keeps the wedge where the network saw it in training. A swap of axes (any 90 degree rotation
that moves z into x or y, or x into y) turns the wedge and is therefore never used.

A single flip is a mirror: it turns a chiral particle (a ribosome, a helix) into its enantiomer,
which a network trained without mirror augmentation has never seen. The default set is therefore
the four *proper* rotations that keep the wedge: identity and the 180 degree rotations about Y
(flip z and x), Z (flip y and x) and X (flip z and y). ``mirrors`` adds the four mirror images.
"""

from __future__ import annotations

from itertools import combinations

from deepict_dask.errors import ConfigError

TTA_MODES = ("none", "rotations", "mirrors")


def tta_flips(dim: int, mode: str) -> list[tuple[int, ...]]:
    """Spatial axes to flip for each augmentation (axes of a ``z, y, x`` or ``y, x`` window)."""
    if mode not in TTA_MODES:
        raise ConfigError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    if mode == "none":
        return [()]
    axes = tuple(range(dim))
    if mode == "rotations":
        return [()] + [pair for pair in combinations(axes, 2)]
    return [c for r in range(dim + 1) for c in combinations(axes, r)]
