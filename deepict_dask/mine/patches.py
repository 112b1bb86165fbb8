"""Patch stacks: small sub-volumes around patch centres, in one chunked Zarr array (N x D x H x W).

Each chunk of the stack (``chunk`` patches) is one Dask task that reads its patches straight from
the tomograms (:class:`~deepict_dask.mine.regions.RegionReader`) and writes its own chunk, so tasks
share no data. The stack is written under a temporary name and renamed when complete; beside it a
coordinate table (``tomo``, ``x, y, z`` voxels, ``x_A, y_A, z_A`` Angstrom, ``patch`` = row of the
stack) says where every patch comes from. Centres whose patch does not fit entirely inside the
tomogram are dropped (no padding: a mirrored border would invent structure the autoencoder would
then learn); the patch spans ``centre - shape // 2`` to ``centre - shape // 2 + shape``.

With ``lowpass_sigma`` each patch is read with a halo of ``4 sigma`` (clipped at the tomogram's
border), smoothed and cropped: the same values as smoothing the whole tomogram (``mode="nearest"``
at its border) and cutting the patch out, without ever holding the tomogram. Normalisation then uses
the smoothed tomogram's mean and standard deviation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.coords import write_table
from deepict_dask.io.volume import spatial_shape
from deepict_dask.mine.options import PatchOptions
from deepict_dask.mine.regions import RegionReader

log = logging.getLogger(__name__)


def _data(volume: xr.DataArray):
    return volume.data if volume.ndim == 3 else volume.data[0]


def fitting_centres(centres: pd.DataFrame, shapes: Mapping[str, tuple[int, int, int]],
                    patch_shape: tuple[int, int, int]) -> pd.DataFrame:
    """Rows of ``centres`` whose whole patch lies inside their tomogram (``start`` columns added).

    Raises :class:`InputError` naming the tomogram when a patch is larger than it, or when no
    centre is left at all.
    """
    p = np.asarray(patch_shape, np.int64)
    kept = []
    for name, rows in centres.groupby("tomo", sort=False):
        if name not in shapes:
            raise InputError(f"centre table names tomogram {name!r}, which is not among the inputs")
        shape = np.asarray(shapes[name], np.int64)
        if np.any(p > shape):
            raise InputError(f"patch of {list(patch_shape)} voxels (z, y, x) is larger than the tomogram "
                             f"({shape.tolist()} voxels)", str(name))
        zyx = np.rint(rows[["z", "y", "x"]].to_numpy(float)).astype(np.int64)
        start = zyx - p // 2
        ok = np.all((start >= 0) & (start + p <= shape), axis=1)
        if (~ok).any():
            log.info("%s: %d of %d centres dropped (patch would cross the border)", name, int((~ok).sum()), len(ok))
        sub = rows[ok].copy()
        sub[["z0", "y0", "x0"]] = start[ok]
        kept.append(sub)
    table = pd.concat(kept, ignore_index=True) if kept else centres.iloc[:0].copy()
    if table.empty:
        raise InputError(f"no patch centre lies at least half a patch ({list(patch_shape)} voxels) inside its tomogram")
    return table


def lowpass_halo(sigma: float) -> int:
    """Voxels read beyond a patch so that its Gaussian low-pass equals the whole tomogram's."""
    return int(4.0 * sigma + 0.5) if sigma > 0 else 0


def _smooth(block: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(block.astype(np.float32, copy=False), sigma, mode="nearest", truncate=4.0)


def _norm_stats(volume: xr.DataArray, mode: str, name: str, sigma: float = 0.0) -> tuple[float, float]:
    if mode != "tomogram":
        return 0.0, 1.0
    from deepict_dask.preprocess.normalize import checked_stats

    if sigma > 0:  # the statistics of what the patches are cut from: the smoothed tomogram
        data = _data(volume)
        smoothed = data.map_overlap(_smooth, depth=lowpass_halo(sigma), boundary="nearest", dtype=np.float32,
                                    sigma=sigma)
        volume = xr.DataArray(smoothed, dims=("z", "y", "x"), attrs=dict(volume.attrs))
    return checked_stats(volume, source=name)


def read_patch(reader: RegionReader, start: np.ndarray, patch_shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """One patch (float32), low-passed with ``sigma`` voxels when positive (halo read and cropped)."""
    if sigma <= 0:
        return reader(tuple(slice(int(s), int(s) + p) for s, p in zip(start, patch_shape)))
    halo = lowpass_halo(sigma)
    lo = [max(int(s) - halo, 0) for s in start]
    hi = [min(int(s) + p + halo, n) for s, p, n in zip(start, patch_shape, reader.shape)]
    region = _smooth(reader(tuple(slice(a, b) for a, b in zip(lo, hi))), sigma)
    return region[tuple(slice(int(s) - a, int(s) - a + p) for s, a, p in zip(start, lo, patch_shape))]


@dataclass(frozen=True)
class PatchReader:
    """Everything a task needs to cut a run of patches from the tomograms, normalised: the patch stack's
    writer stores them, ``filter``'s fused path encodes them at once (no stack). Picklable; a task
    gets :meth:`part` of it, so it carries only its own patches' positions."""

    starts: np.ndarray  # (n, 3) first voxel of every patch (z, y, x)
    tomo_index: np.ndarray  # (n,) index into readers/stats
    readers: tuple[RegionReader, ...]
    stats: tuple[tuple[float, float], ...]  # per tomogram (mean, std) of tomogram normalisation
    patch_shape: tuple[int, int, int]
    mode: str  # normalisation: tomogram, patch or none
    sigma: float = 0.0  # low-pass

    def __len__(self) -> int:
        return len(self.starts)

    def part(self, i0: int, i1: int) -> PatchReader:
        """The patches ``i0 .. i1`` only."""
        return replace(self, starts=self.starts[i0:i1], tomo_index=self.tomo_index[i0:i1])

    def read(self) -> np.ndarray:
        """The patches (n, D, H, W) float32, low-passed and normalised."""
        out = np.empty((len(self.starts), *self.patch_shape), np.float32)
        for j, (start, t) in enumerate(zip(self.starts, self.tomo_index)):
            patch = read_patch(self.readers[t], start, self.patch_shape, self.sigma)
            if self.mode == "patch":
                mean, std = float(patch.mean()), float(patch.std())
            else:
                mean, std = self.stats[t]
            out[j] = (patch - np.float32(mean)) / np.float32(std if std > 0 else 1.0)
        return out


def patch_reader(volumes: Mapping[str, xr.DataArray], centres: pd.DataFrame,
                 opts: PatchOptions) -> tuple[pd.DataFrame, PatchReader]:
    """The patches table of ``centres`` (those that fit; column ``patch`` = row) and the reader of its patches.

    Normalisation statistics are computed here (a pass over each tomogram for ``tomogram`` normalisation).
    """
    shapes = {name: spatial_shape(v) for name, v in volumes.items()}
    table = fitting_centres(centres, shapes, opts.patch_shape)
    names = list(volumes)
    reader = PatchReader(starts=table[["z0", "y0", "x0"]].to_numpy(np.int64),
                         tomo_index=table["tomo"].map({n: i for i, n in enumerate(names)}).to_numpy(np.int64),
                         readers=tuple(RegionReader.of(_data(volumes[n])) for n in names),
                         stats=tuple(_norm_stats(volumes[n], opts.normalization, n, opts.lowpass_sigma) for n in names),
                         patch_shape=tuple(int(s) for s in opts.patch_shape), mode=opts.normalization,
                         sigma=opts.lowpass_sigma)
    table = table.drop(columns=["z0", "y0", "x0"]).reset_index(drop=True)
    table["patch"] = np.arange(len(table), dtype=np.int64)
    return table, reader


def _write_chunk(path: str, i0: int, part: PatchReader) -> int:
    """Read a run of patches and store them in the stack from row ``i0`` (its own chunk)."""
    import zarr

    zarr.open_array(path, mode="r+")[i0 : i0 + len(part)] = part.read()
    return len(part)


def write_patch_stack(volumes: Mapping[str, xr.DataArray], centres: pd.DataFrame, out: str | os.PathLike,
                      table_path: str | os.PathLike, opts: PatchOptions) -> pd.DataFrame:
    """Extract patches around ``centres`` from ``volumes`` (by tomogram name) into a Zarr stack.

    Parameters
    ----------
    volumes
        Tomogram name -> lazy volume (:func:`deepict_dask.io.open_volume`).
    centres
        Coordinate table; its ``tomo`` column names the volume, ``x, y, z`` the centre in voxels.
    out, table_path
        The patch stack (``.zarr``) and its coordinate table (``.csv``), both written atomically.
    opts
        Patch shape, normalisation, patches per chunk.

    Returns
    -------
    The table of the stored patches (column ``patch`` = index in the stack).
    """
    import zarr

    from deepict_dask.io.zarr_store import compressor_codec as _compressor

    table, reader = patch_reader(volumes, centres, opts)
    n = len(table)
    attrs: dict[str, Any] = {"patch_shape": list(opts.patch_shape), "normalization": opts.normalization,
                             "lowpass_sigma": opts.lowpass_sigma,
                             "tomograms": list(volumes), "deepict": "patch stack"}
    with atomic_path(out) as tmp:
        arr = zarr.create_array(str(tmp), shape=(n, *opts.patch_shape), chunks=(opts.chunk, *opts.patch_shape),
                                dtype="float32", fill_value=0, compressors=_compressor("zstd", 3), zarr_format=3)
        arr.attrs.update(attrs)
        tasks = [dask.delayed(_write_chunk)(str(tmp), i0, reader.part(i0, i0 + opts.chunk))
                 for i0 in range(0, n, opts.chunk)]
        dask.compute(*tasks)
    write_table(table, table_path)
    return table


def stack_cut(stack: Any) -> PatchOptions:
    """How the patches of an open patch stack were cut: its normalisation and low-pass (defaults where it
    records none), with its patch shape and chunking."""
    recorded = {key: stack.attrs[key] for key in ("normalization", "lowpass_sigma") if key in stack.attrs}
    return PatchOptions(patch_shape=tuple(int(s) for s in stack.shape[1:]), chunk=int(stack.chunks[0]), **recorded)


def open_patch_stack(path: str | os.PathLike) -> Any:
    """The patch stack at ``path`` (a 4D Zarr array), or one :class:`InputError` saying why not."""
    import zarr

    try:
        arr = zarr.open_array(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a missing or foreign store
        raise InputError(f"not a patch stack (a 4D Zarr array): {exc}", path) from exc
    if arr.ndim != 4:
        raise InputError(f"not a patch stack: expected a 4D array (N, D, H, W), found {arr.ndim}D", path)
    return arr
