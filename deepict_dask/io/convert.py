"""Convert tomograms to multiscale OME-Zarr (or back to MRC): what ``deepict convert`` and a run's
convert stage both call, with one options model.

MRC inputs are read in the output chunks (aligned, no rechunking); Zarr inputs in their stored
chunks, rechunked while writing. Writing is atomic and chunk by chunk, so memory stays bounded
whatever the tomogram size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import xarray as xr
from pydantic import Field, field_validator

from deepict_dask.options import Options


class ConvertOptions(Options):
    """How to convert a tomogram.

    Parameters
    ----------
    format
        ``ome-zarr`` (multiscale, the default) or ``mrc``.
    chunks
        Chunk edge in voxels: one value, or three (z, y, x) as a list or ``"64,128,128"``.
    levels
        Pyramid levels including full resolution (2x mean-downsampled each).
    compressor
        Blosc compressor: ``zstd``, ``lz4`` (faster, compresses less) or ``none``.
    ngff
        OME-NGFF version: ``0.4`` writes Zarr v2 (widest reader support), ``0.5`` Zarr v3.
    voxel_size
        Angstrom, replacing the input's (required for headers without one).
    group, level
        For OME-Zarr inputs: the image group and the pyramid level to read.
    """

    format: Literal["ome-zarr", "mrc"] = "ome-zarr"
    chunks: int | tuple[int, int, int] = Field(128, description="chunk edge in voxels, one value or three (z, y, x)")
    levels: int = Field(3, ge=1, description="pyramid levels including full resolution")
    compressor: Literal["zstd", "lz4", "none"] = "zstd"
    ngff: Literal["0.4", "0.5"] = "0.4"
    voxel_size: float | tuple[float, float, float] | None = Field(
        None, description="Angstrom (one value, or z, y, x), replacing the input's")
    group: str | None = Field(None, description="OME-Zarr input: the image group to read")
    level: int = Field(0, ge=0, description="OME-Zarr input: the pyramid level to read")

    @field_validator("voxel_size")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        sizes = value if isinstance(value, tuple) else (value,)
        if value is not None and not all(v > 0 for v in sizes):
            raise ValueError(f"must be positive, got {value!r}")
        return value

    @field_validator("chunks", mode="before")
    @classmethod
    def _chunks(cls, value: Any) -> Any:
        """``128``, ``"128"``, ``"64,128,128"`` or ``[64, 128, 128]``; every edge at least 1."""
        problem = ValueError(f"takes one positive integer or three (z,y,x), got {value!r}")
        if isinstance(value, bool):
            raise problem
        if isinstance(value, str):
            try:
                value = [int(v) for v in value.split(",")]
            except ValueError:
                raise problem from None
        values = [value] if isinstance(value, int) else list(value) if isinstance(value, list | tuple) else None
        if values is None or len(values) not in (1, 3) or not all(isinstance(v, int) and v >= 1 for v in values):
            raise problem
        return values[0] if len(values) == 1 else tuple(values)


def open_source(src: str | os.PathLike, options: ConvertOptions) -> xr.DataArray:
    """Open (and so check) one input lazily; raises :class:`~deepict_dask.errors.DeepictError` on bad input."""
    from deepict_dask.io import is_zarr_path, open_volume

    read_chunks = None if is_zarr_path(src) else options.chunks
    return open_volume(src, read_chunks, level=options.level, group=options.group, voxel_size=options.voxel_size)


def write_converted(volume: xr.DataArray, dst: str | os.PathLike, options: ConvertOptions, *,
                    attrs: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write an opened input to ``dst`` (an ``.ome.zarr`` store or an ``.mrc`` file, by ``options.format``)."""
    from deepict_dask.io import write_mrc, write_ome_zarr

    if options.format == "mrc":
        return write_mrc(volume, dst, overwrite=overwrite)
    return write_ome_zarr(volume, dst, levels=options.levels, chunks=options.chunks, compressor=options.compressor,
                          overwrite=overwrite, attrs=attrs, ngff_version=options.ngff)


def convert(src: str | os.PathLike, dst: str | os.PathLike, options: ConvertOptions | None = None, *,
            attrs: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Convert one tomogram.

    Parameters
    ----------
    src
        MRC/MRCS/REC/MAP file, Zarr array or OME-Zarr image.
    dst
        The output: an ``.ome.zarr`` store, or an ``.mrc`` file with ``format="mrc"``.
    options
        :class:`ConvertOptions` (default: its defaults).
    attrs
        Extra attributes stored with an OME-Zarr image.
    overwrite
        Replace an existing output (refused otherwise).

    Returns
    -------
    Path
        The written output.
    """
    options = options or ConvertOptions()
    return write_converted(open_source(src, options), dst, options, attrs=attrs, overwrite=overwrite)


def nonfinite_count(store: str | os.PathLike) -> int:
    """NaN/inf voxels counted while an OME-Zarr image was written (stored in its attributes)."""
    import zarr

    attrs = zarr.open_group(str(store), mode="r").attrs.asdict()
    return int((attrs.get("deepict", {}).get("stats", {}) or {}).get("nonfinite", 0) or 0)
