"""Rotation-invariant descriptors of patches: codes that do not change when a structure turns.

An autoencoder's code of a membrane patch depends on the membrane's orientation, so k-means spends
its clusters on orientations (the paper's gallery shows "membranes in several orientations") and
membrane patches share clusters with whatever else has the same orientation. These descriptors are
blind to orientation by construction, and need no training:

- per 1-voxel-thick spherical shell around the patch centre: mean, standard deviation and 10th
  percentile of its voxels (what lies at which distance from the centre: a ribosome is a dark core);
- per sphere of radius 4, 6, ... voxels (up to half the patch's smallest edge): the eigenvalues of the
  gradient structure tensor at two smoothing scales, as log of their sum and their three shares
  (one large share: a plane such as a membrane; two: a filament; three equal: a blob or noise).

On the evaluation's simulated tomograms they cluster ribosomes and membranes more purely than the
autoencoder's codes (``examples/README_mine.md``), and more so from unfiltered patches: they smooth at
their own scales, and a low-pass first (which the autoencoder needs) blurs a membrane into the
background around it (``EncodeOptions.invariant_lowpass``). Features differ in scale, so the codes are
z-scored with statistics of the stack they were fitted on (kept, to encode new tomograms the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TENSOR_SIGMAS = (1.0, 2.5)  # voxels: fine edges and the scale of a membrane's width
PERCENTILE = 10.0


def _radius(shape: Sequence[int]) -> np.ndarray:
    axes = [np.arange(n, dtype=np.float32) - (n - 1) / 2 for n in shape]
    grids = np.meshgrid(*[a**2 for a in axes], indexing="ij")
    return np.sqrt(grids[0] + grids[1] + grids[2])


def tensor_radii(shape: Sequence[int]) -> list[int]:
    """Radii of the structure-tensor spheres: 4, 6, ... below half the smallest edge (at least one)."""
    half = min(int(s) for s in shape) / 2
    radii = list(range(4, int(np.ceil(half)), 2))
    return radii or [max(1, int(half))]


def descriptor_size(shape: Sequence[int]) -> int:
    """Number of descriptors of a patch of ``shape`` (z, y, x)."""
    return 3 * (min(int(s) for s in shape) // 2) + 4 * len(TENSOR_SIGMAS) * len(tensor_radii(shape))


def _shells(patches: np.ndarray, r: np.ndarray) -> list[np.ndarray]:
    out = []
    for a in range(min(patches.shape[1:]) // 2):
        v = patches[:, (r >= a) & (r < a + 1)]
        out += [v.mean(1), v.std(1), np.percentile(v, PERCENTILE, axis=1)]
    return out


def _tensor(patches: np.ndarray, r: np.ndarray, sigma: float, radii: list[int]) -> list[np.ndarray]:
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(patches, (0, sigma, sigma, sigma), mode="nearest")
    grads = np.gradient(smooth, axis=(1, 2, 3))
    out = []
    for radius in radii:
        inside = r < radius
        g = [gi[:, inside] for gi in grads]
        t = np.empty((len(patches), 3, 3), np.float64)
        for i in range(3):
            for j in range(i, 3):
                t[:, i, j] = t[:, j, i] = (g[i] * g[j]).mean(1)
        ev = np.sort(np.linalg.eigvalsh(t), axis=1)[:, ::-1]
        total = ev.sum(1) + 1e-12
        out += [np.log(total), ev[:, 0] / total, ev[:, 1] / total, ev[:, 2] / total]
    return out


def describe(patches: np.ndarray) -> np.ndarray:
    """Raw descriptors ``(N, descriptor_size)`` float32 of patches ``(N, Z, Y, X)`` (not yet z-scored)."""
    x = np.asarray(patches, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"patches must be (N, Z, Y, X), got shape {list(x.shape)}")
    r = _radius(x.shape[1:])
    radii = tensor_radii(x.shape[1:])
    parts = _shells(x, r)
    for sigma in TENSOR_SIGMAS:
        parts += _tensor(x, r, sigma, radii)
    return np.stack(parts, 1).astype(np.float32)
