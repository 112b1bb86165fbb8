"""Patch augmentation that respects cryo-ET geometry.

3D: the tilt axis is Y and the missing wedge is symmetric about every axis, so the three 180°
rotations (about z, y or x) keep both the wedge and the particles' handedness; mirror flips keep the
wedge but change handedness (off by default). 2D slices: flips and 90° rotations (DeePiCt).
Intensity scale/shift and Gaussian noise act on the image only.
"""

from __future__ import annotations

import numpy as np

from deepict_dask.train.config import AugmentConfig

# axes pairs flipped together by a 180° rotation about z, y and x (array axes z=0, y=1, x=2)
_ROT180 = ((1, 2), (0, 2), (0, 1))


def augment(img: np.ndarray, tgt: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Augment one patch: ``img`` (spatial...) and ``tgt`` (C, spatial...), same geometric transform."""
    nd = img.ndim
    if dim == 3:
        if cfg.rotate_180:
            choice = int(rng.integers(4))
            if choice < 3:
                axes = _ROT180[choice]
                img, tgt = np.flip(img, axes), np.flip(tgt, tuple(a + 1 for a in axes))
        if cfg.flip:
            for ax in range(nd):
                if rng.random() < 0.5:
                    img, tgt = np.flip(img, ax), np.flip(tgt, ax + 1)
    else:
        if cfg.rotate_180:
            k = int(rng.integers(4))
            img, tgt = np.rot90(img, k, (0, 1)), np.rot90(tgt, k, (1, 2))
        if cfg.flip and rng.random() < 0.5:
            img, tgt = np.flip(img, 1), np.flip(tgt, 2)
    img = np.ascontiguousarray(img, dtype=np.float32)
    if cfg.intensity_scale > 0:
        img *= np.float32(1.0 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale))
    if cfg.intensity_shift > 0:
        img += np.float32(rng.uniform(-cfg.intensity_shift, cfg.intensity_shift))
    if cfg.noise_std > 0:
        sigma = rng.uniform(0, cfg.noise_std)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return img, np.ascontiguousarray(tgt)
