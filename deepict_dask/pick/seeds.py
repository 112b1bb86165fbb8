"""Seeds for splitting touching particles: local maxima at least a minimum distance apart.

A seed is decided from its neighbourhood alone, so every block that sees a voxel (with enough halo)
takes the same decision and the result does not depend on chunking:

* the *landscape* is the Euclidean distance transform of the foreground (``edt``: the centre of a
  sphere is its deepest point, a neck between two touching spheres is shallow) or the probability
  map, optionally Gaussian-smoothed (``prob``);
* *candidates* are voxels no lower than their 26 neighbours, inside the foreground, optionally only
  those inside an h-maximum (a dome at least ``h`` high: shallow bumps are ignored);
* a candidate is a *seed* when no other candidate within ``min_distance`` (an ellipsoid in voxels,
  round in Angstrom) ranks higher. Ranks are a total order, value first, then the lower global raster
  index, so plateaus yield exactly one seed and two seeds are never closer than ``min_distance``.

The decision at a voxel needs the landscape exact within ``min_distance + 1`` of it; the halo
helper below adds what smoothing needs on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.units import parse_length

SEED_SOURCES = ("edt", "prob")
def min_distance_voxels(value: float | str, voxel_size: Sequence[float], shape: Sequence[int] | None) -> tuple[float, float, float]:
    """``min_distance`` as per-axis radii in voxels (z, y, x); checked against the volume (if ``shape``).

    Bare numbers are voxels here (the block functions' unit); options pass ``"80A"`` / ``"8vx"``."""
    try:
        length = parse_length(value, "vx")
    except ValueError as exc:
        raise ConfigError(f"min_distance: {exc}") from None
    amount = length.value
    if not np.isfinite(amount) or amount <= 0:
        raise ConfigError(f"min_distance must be > 0, got {value!r}: seeds closer than this are merged")
    vs = [float(v) for v in voxel_size]
    radii = tuple(amount / v for v in vs) if length.unit == "A" else (amount,) * 3
    if shape is not None and all(r >= n for r, n in zip(radii, shape)):
        raise ConfigError(
            f"min_distance {value} ({max(radii):.3g} voxels) is larger than the volume {tuple(int(n) for n in shape)}: "
            "at most one particle could be found; give roughly the particle radius"
        )
    return tuple(float(r) for r in radii)


def smooth_radius(sigma: float) -> int:
    """Voxels of context a Gaussian of ``sigma`` needs (scipy's default truncation, 4 sigma)."""
    return int(math.ceil(4.0 * sigma)) if sigma > 0 else 0


def seed_halo(radii: Sequence[float], sigma: float, diameter: float | None = None) -> int:
    """Halo (voxels) that makes seeds and basins independent of chunking: the basin of a seed near
    the block must fit (one particle diameter, by default twice the seed distance), and the
    landscape must be exact over the seed neighbourhood."""
    r = max(radii)
    reach = max(diameter if diameter is not None else 2.0 * r, r + 1.0)
    return int(math.ceil(reach)) + smooth_radius(sigma) + 1


def landscape(fg: np.ndarray, prob: np.ndarray, source: str, sigma: float, spacing: Sequence[float] = (1, 1, 1)) -> np.ndarray:
    """The image whose maxima are seeds and whose descent gives basins (float32, 0 outside ``fg``
    for ``edt``)."""
    from scipy import ndimage

    if source == "edt":
        import edt

        rel = np.asarray(spacing, float) / min(spacing)
        img = edt.edt(np.ascontiguousarray(fg, dtype=np.uint8), anisotropy=tuple(rel), black_border=False).astype(np.float32)
    elif source == "prob":
        img = np.asarray(prob, dtype=np.float32)
    else:
        raise ConfigError(f"unknown seed source {source!r}; choose one of {list(SEED_SOURCES)}")
    if sigma > 0:
        img = ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=4.0)
    return img


# the 26 neighbour offsets, faces first: most voxels fail against a face neighbour, so the
# candidate set shrinks fastest in this order
_NEIGHBOURS = sorted(((dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dz or dy or dx),
                     key=lambda d: abs(d[0]) + abs(d[1]) + abs(d[2]))


def candidates(image: np.ndarray, allowed: np.ndarray, h: float | None = None, comp: np.ndarray | None = None,
               boxes: list | None = None) -> np.ndarray:
    """(k, 3) voxel coordinates of regional-or-plateau local maxima (26-neighbourhood) in ``allowed``;
    with ``h``, only those inside a dome at least ``h`` high. Only ``allowed`` voxels are compared
    (a gather per neighbour), and each comparison drops the voxels that fail it, so the cost is a
    few passes over the foreground, not 26. ``comp`` (connected components of ``allowed``) lets the
    h-maxima test run per cluster, in its bounding box (``boxes``: ``find_objects(comp)`` when the caller
    has it), and only where a cluster has several maxima."""
    pad = np.pad(image.astype(np.float32, copy=False), 1, constant_values=-np.inf)
    flat = pad.ravel()
    sy, sx = pad.shape[1] * pad.shape[2], pad.shape[2]
    pidx = np.flatnonzero(np.pad(allowed, 1))
    value = flat[pidx]
    for dz, dy, dx in _NEIGHBOURS:
        ok = value >= flat[pidx + (dz * sy + dy * sx + dx)]
        pidx, value = pidx[ok], value[ok]
    coords = np.stack(np.unravel_index(pidx, pad.shape), axis=1) - 1
    if h is not None and h > 0 and len(coords) > 1:
        coords = coords[_h_keep(image, coords, h, comp, boxes)]
    return coords


def _h_keep(image: np.ndarray, coords: np.ndarray, h: float, comp: np.ndarray | None,
            boxes: list | None = None) -> np.ndarray:
    """Which maxima lie in a dome at least ``h`` high (``skimage.morphology.h_maxima``)."""
    from skimage.morphology import h_maxima

    if comp is None:
        return h_maxima(image.astype(np.float64), h)[tuple(coords.T)].astype(bool)
    from scipy import ndimage

    keep = np.ones(len(coords), bool)
    cid = comp[tuple(coords.T)].astype(np.int64)
    counts = np.bincount(cid)
    boxes = boxes if boxes is not None else ndimage.find_objects(comp)
    for c in np.flatnonzero(counts >= 2):
        box = boxes[c - 1]
        inside = comp[box] == c
        sub = np.where(inside, image[box], image[box][inside].min()).astype(np.float64)
        mine = np.flatnonzero(cid == c)
        lo = np.array([sl.start for sl in box])
        keep[mine] = h_maxima(sub, h)[tuple((coords[mine] - lo).T)].astype(bool)
    return keep


def select(coords: np.ndarray, values: np.ndarray, rank_index: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """Boolean keep-mask: a candidate survives when no candidate within the ellipsoid ``radii``
    ranks higher (value, then lower ``rank_index``)."""
    n = len(coords)
    keep = np.ones(n, bool)
    if n < 2:
        return keep
    from scipy.spatial import cKDTree

    scaled = coords.astype(np.float64) / np.asarray(radii, np.float64)
    pairs = cKDTree(scaled).query_pairs(1.0 - 1e-9, output_type="ndarray")
    if len(pairs) == 0:
        return keep
    a, b = pairs[:, 0], pairs[:, 1]
    a_wins = (values[a] > values[b]) | ((values[a] == values[b]) & (rank_index[a] < rank_index[b]))
    keep[np.where(a_wins, b, a)] = False
    return keep


def find_seeds(
    image: np.ndarray,
    allowed: np.ndarray,
    radii: Sequence[float],
    *,
    h: float | None = None,
    array_origin: Sequence[int] = (0, 0, 0),
    global_shape: Sequence[int] | None = None,
    comp: np.ndarray | None = None,
    boxes: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeds of ``image`` (local coordinates, (k, 3) int) and their global raster indices.

    ``array_origin`` is the global position of ``image[0, 0, 0]`` and ``global_shape`` the whole
    volume's shape (default: this array), so that ties are broken the same way in every block.
    """
    coords = candidates(image, allowed, h, comp, boxes)
    shape = tuple(global_shape) if global_shape is not None else image.shape
    gidx = np.ravel_multi_index(tuple((coords + np.asarray(array_origin, np.int64)).T), shape).astype(np.int64) \
        if len(coords) else np.zeros(0, np.int64)
    values = image[tuple(coords.T)] if len(coords) else np.zeros(0, image.dtype)
    keep = select(coords, values, gidx, radii)
    return coords[keep], gidx[keep]


def looks_binary(prob: np.ndarray, fg: np.ndarray) -> bool:
    """True when a block holding foreground has only the values 0 and 1: a mask, not probabilities."""
    if not fg.any():
        return False
    return bool(np.all((prob == 0) | (prob == 1)))


def binary_error(method: str) -> InputError:
    return InputError(
        f"method {method} needs a probability map, but the input holds only 0 and 1 (a binary mask); "
        "pass the network's probability map, or split a mask with method watershed and seeds edt"
    )
