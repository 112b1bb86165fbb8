"""Reference-free patch centres: Difference-of-Gaussians peaks, or a regular grid.

As published for Autoencoder3D feature mining: smooth with a Gaussian (``sigma``, 2 voxels), take a
Difference of Gaussians (``dog_sigma`` 5 voxels and ``dog_sigma * dog_k``, K = 1.1) and keep local
maxima at least ``min_distance`` (10 voxels) apart. Lengths are in voxels, as in the paper.

The search runs as one Dask task per block of the volume, each reading its block plus a halo wide
enough that the filtered image is exact over the block and over every competitor of a peak in it
(Gaussian truncation radii + ``min_distance`` + 2). A peak is decided by its neighbourhood alone
with a total order (response, then the lower global raster index, as in
:mod:`deepict_dask.pick.seeds`), so the peak set is identical whatever the chunking. At the volume
border the filters reflect the image (scipy's default), the same in every block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import dask
import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.coords import make_table
from deepict_dask.io.volume import origin_of, spatial_shape, voxel_size_of
from deepict_dask.mine.options import CentreOptions
from deepict_dask.mine.regions import RegionReader
from deepict_dask.pick.seeds import find_seeds, smooth_radius


def dog_response(image: np.ndarray, opts: CentreOptions) -> np.ndarray:
    """Gaussian smoothing then Difference of Gaussians, signed so that the wanted blobs are maxima."""
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if opts.sigma > 0:
        img = ndimage.gaussian_filter(img, opts.sigma, truncate=4.0)
    narrow = ndimage.gaussian_filter(img, opts.dog_sigma, truncate=4.0)
    wide = ndimage.gaussian_filter(img, opts.dog_sigma * opts.dog_k, truncate=4.0)
    dog = narrow - wide  # positive at the centre of a bright blob
    return -dog if opts.polarity == "dark" else dog


def dog_halo(opts: CentreOptions) -> int:
    """Voxels of context that make a block's peaks exact: both filters' reach, the peak distance, 2."""
    return smooth_radius(opts.sigma) + smooth_radius(opts.dog_sigma * opts.dog_k) + int(math.ceil(opts.min_distance)) + 2


def _block_peaks(reader: RegionReader, core: tuple[slice, ...], halo: int, opts: CentreOptions) -> np.ndarray:
    """Peaks whose position lies in ``core``: rows (z, y, x, raster index, response) as float64."""
    ext = tuple(slice(max(0, s.start - halo), min(n, s.stop + halo)) for s, n in zip(core, reader.shape))
    resp = dog_response(reader(ext), opts)
    floor = 0.0 if opts.threshold is None else float(opts.threshold)
    origin = np.array([s.start for s in ext], np.int64)
    coords, gidx = find_seeds(resp, resp > floor, (float(opts.min_distance),) * 3, array_origin=origin,
                              global_shape=reader.shape)
    if len(coords) == 0:
        return np.zeros((0, 5))
    glob = coords + origin
    inside = np.all((glob >= [s.start for s in core]) & (glob < [s.stop for s in core]), axis=1)
    values = resp[tuple(coords[inside].T)]
    return np.column_stack([glob[inside], gidx[inside], values]).astype(np.float64)


def _blocks(shape: Sequence[int], block: int) -> list[tuple[slice, ...]]:
    starts = [range(0, n, block) for n in shape]
    return [tuple(slice(s, min(s + block, n)) for s, n in zip(st, shape)) for st in product(*starts)]


def dog_peaks(data, opts: CentreOptions) -> tuple[np.ndarray, np.ndarray]:
    """``(zyx int (k, 3), response (k,))`` of the DoG peaks of a 3D array, strongest first.

    Computed as Dask tasks over blocks of ``opts.block`` voxels (halo included); ties in response
    are ordered by raster index, so the result does not depend on ``opts.block`` or the chunks.
    """
    reader = RegionReader.of(data)
    halo = dog_halo(opts)
    tasks = [dask.delayed(_block_peaks)(reader, core, halo, opts) for core in _blocks(reader.shape, opts.block)]
    rows = np.concatenate(dask.compute(*tasks)) if tasks else np.zeros((0, 5))
    order = np.lexsort((rows[:, 3], -rows[:, 4]))  # strongest first, then raster order
    rows = rows[order]
    if opts.max_peaks is not None:
        rows = rows[: opts.max_peaks]
    return rows[:, :3].astype(np.int64), rows[:, 4]


def grid_points(shape: Sequence[int], stride: int, patch_shape: Sequence[int]) -> np.ndarray:
    """Centres of a regular grid with ``stride`` whose patches of ``patch_shape`` fit the volume."""
    axes = []
    for n, p in zip(shape, patch_shape):
        half = p // 2
        axes.append(np.arange(half, n - p + half + 1, stride))
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 3), np.int64)
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int64)


def volume_centres(volume: xr.DataArray, name: str, opts: CentreOptions,
                   patch_shape: Sequence[int] = (32, 32, 32)) -> pd.DataFrame:
    """Patch centres of one tomogram as a coordinate table (class ``dog`` or ``grid``, ``score``).

    Raises :class:`InputError` naming the tomogram when there is none (a flat or tiny volume, a
    threshold above every peak).
    """
    shape = spatial_shape(volume)
    data = volume.data if volume.ndim == 3 else volume.data[0]
    if opts.method == "grid":
        zyx = grid_points(shape, opts.stride, patch_shape)
        score = np.zeros(len(zyx))
        if len(zyx) == 0:
            raise InputError(f"no grid point fits a patch of {list(patch_shape)} voxels in a tomogram of "
                             f"{list(shape)} voxels", name)
    else:
        zyx, score = dog_peaks(data, opts)
        if len(zyx) == 0:
            more = f" above threshold {opts.threshold:g}" if opts.threshold is not None else ""
            raise InputError(f"no Difference-of-Gaussians peaks{more} found (sigma {opts.sigma:g}, DoG sigma "
                             f"{opts.dog_sigma:g}, K {opts.dog_k:g}, polarity {opts.polarity}): is the tomogram empty "
                             "or the polarity wrong?", name)
    return make_table(name, opts.method, zyx=zyx, voxel_size=voxel_size_of(volume), origin=origin_of(volume),
                      score=score)
