"""Rendering particle densities and their per-particle label footprints on a voxel grid.

A particle is rendered on its own box (which depends only on the particle, never on the block being
rendered), thresholded there into its label footprint, then cropped into the block. That keeps
labels identical whichever way a large volume is split into blocks.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import ndimage

from .shapes import HOLLOW_CLASSES, LABEL_THRESHOLD, template


def effective_blobs(sigmas: np.ndarray, amps: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Widen blobs by the voxel footprint (avoids aliasing) while keeping their mass."""
    se = np.sqrt(sigmas**2 + (0.4 * voxel_size) ** 2)
    return se, amps * (sigmas / se) ** 3


def splat_gaussians(
    centers_zyx: np.ndarray, sigmas: np.ndarray, amps: np.ndarray, lo: np.ndarray, shape, voxel_size: float
) -> np.ndarray:
    """Sum of isotropic Gaussians (Angstrom) on the grid ``lo + index`` (voxels), as one matrix product."""
    shape = tuple(int(s) for s in shape)
    out_axes = []
    for ax in range(3):
        coords = (lo[ax] + np.arange(shape[ax])) * voxel_size
        g = np.exp(-((coords[None, :] - centers_zyx[:, ax : ax + 1]) ** 2) / (2 * sigmas[:, None] ** 2))
        out_axes.append(g.astype(np.float32))
    gz = out_axes[0] * amps[:, None].astype(np.float32)
    yx = (out_axes[1][:, :, None] * out_axes[2][:, None, :]).reshape(len(amps), -1)
    return (gz.T @ yx).reshape(shape)


def particle_footprint(
    name: str, pos_xyz: np.ndarray, rot: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(box origin in voxels z,y,x; density box; label mask box) of one particle."""
    t = template(name)
    sig, amp = effective_blobs(t.sigmas, t.amps, voxel_size)
    world = pos_xyz + t.centers @ rot.T  # x, y, z Angstrom
    centers_zyx = world[:, ::-1]
    reach = float(np.max(np.linalg.norm(t.centers, axis=1) + 3 * sig))
    p = np.asarray(pos_xyz, float)[::-1]
    lo = np.floor((p - reach) / voxel_size).astype(int)
    hi = np.ceil((p + reach) / voxel_size).astype(int) + 1
    dens = splat_gaussians(centers_zyx, sig, amp, lo, hi - lo, voxel_size)
    mask = dens >= LABEL_THRESHOLD * dens.max()
    if name in HOLLOW_CLASSES:  # closed cavities belong to the particle
        mask = ndimage.binary_fill_holes(mask)
    return lo, dens, mask


@cache
def mask_radius(name: str, voxel_size: float) -> float:
    """Radius (Angstrom) of a sphere about the centre that holds the particle's label in any pose."""
    lo, _, mask = particle_footprint(name, np.zeros(3), np.eye(3), voxel_size)
    idx = np.argwhere(mask) + lo
    r = float(np.max(np.linalg.norm(idx * voxel_size, axis=1)))
    return r + 0.9 * voxel_size


def paste(dst: np.ndarray, dst_lo: np.ndarray, src: np.ndarray, src_lo: np.ndarray):
    """Overlapping slices (dst_slices, src_slices) of two boxes given by their voxel origins, or None."""
    a0 = np.maximum(dst_lo, src_lo)
    a1 = np.minimum(dst_lo + np.array(dst.shape), src_lo + np.array(src.shape))
    if np.any(a1 <= a0):
        return None
    d = tuple(slice(int(s), int(e)) for s, e in zip(a0 - dst_lo, a1 - dst_lo))
    s = tuple(slice(int(s), int(e)) for s, e in zip(a0 - src_lo, a1 - src_lo))
    return d, s
