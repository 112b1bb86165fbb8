"""MRC/MRCS/REC/MAP tomograms as lazy dask arrays, and chunk-by-chunk MRC writing.

The header is parsed once (permissively: old files without the ``MAP `` stamp are accepted when their
sizes are consistent). The data are never loaded: each dask task opens its own ``numpy.memmap`` of
the file and copies out one block, so a graph holds only the path, offset, dtype and shape and pickles
cheaply to distributed workers (a memmap itself would be pickled as a full in-memory copy).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError, OutputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.volume import checked_voxel_size, make_volume, origin_of, voxel_size_of

log = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map", ".st", ".ali")
HEADER_BYTES = 1024
COMPLEX_MODES = (3, 4)  # complex int16 / complex float32: reading them would drop the imaginary part


@dataclass(frozen=True)
class MrcHeader:
    """What a reader needs from an MRC header, plus the printable fields kept as metadata."""

    path: str
    shape: tuple[int, ...]  # (nz, ny, nx)
    dtype: np.dtype
    data_offset: int
    voxel_size: tuple[float, float, float]  # (z, y, x) Angstrom
    origin: tuple[float, float, float]  # (z, y, x) Angstrom
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def _plain(value: Any) -> Any:
    """Header values as JSON-friendly Python objects."""
    arr = np.asarray(value)
    if arr.dtype.names:
        return [_plain(arr[n]) for n in arr.dtype.names]
    if arr.dtype.kind in "SV":
        return bytes(arr.tobytes()).decode("ascii", "replace").rstrip("\x00 ").strip()
    if arr.ndim:
        return [_plain(v) for v in arr]
    return arr.item()


IMOD_STAMP = 1146047817


def _imod_unsigned_bytes(raw: bytes, order: str) -> bool:
    """IMOD writes mode-0 data as unsigned bytes unless bit 0 of its ``imodFlags`` says signed."""
    stamp, flags = np.frombuffer(raw[152:160], dtype=np.dtype(np.int32).newbyteorder(order))
    return int(stamp) == IMOD_STAMP and not int(flags) & 1


def header_decimal(cell: float, grid: int) -> float:
    """The shortest decimal voxel size ``v`` that a writer turns into this header: float32(v * grid) == cell.

    The header stores the cell length in float32, so 13.48 A comes back as 13.479999542236328 and
    two equal spacings over different grid sizes as 7.89 and 7.8900003; we keep the value meant.
    """
    if grid <= 0 or not np.isfinite(cell):
        return float(cell) if grid > 0 else 0.0
    exact = float(cell) / grid
    for digits in range(1, 10):
        value = float(f"{exact:.{digits}g}")
        if np.float32(value * grid) == np.float32(cell):
            return value
    return float(np.format_float_positional(np.float32(exact), unique=True, trim="-"))


def header_voxel_size(cella: Any, grid: tuple[int, int, int]) -> tuple[float, float, float]:
    """(z, y, x) voxel size in Angstrom from the header's cell lengths and grid sizes (mx, my, mz)."""
    return tuple(header_decimal(float(c), g) for c, g in zip((cella.z, cella.y, cella.x), grid[::-1]))  # type: ignore[return-value]


def read_mrc_header(
    path: str | os.PathLike, voxel_size: float | tuple[float, float, float] | None = None
) -> MrcHeader:
    """Parse and check an MRC header without reading the data.

    Raises :class:`InputError` for a missing file, a file that is not an MRC map, an unsupported
    (complex) data mode, a truncated file (the header promises more bytes than the file holds), or a
    voxel size that is 0, NaN or negative unless ``voxel_size`` (Angstrom, scalar or z, y, x)
    is given, which then replaces the header's.
    """
    from mrcfile import utils
    from mrcfile.dtypes import HEADER_DTYPE

    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        raise InputError("is a directory, expected an MRC file", p)
    size = p.stat().st_size
    if size < HEADER_BYTES:
        raise InputError(f"not an MRC file: only {size} bytes, an MRC header alone is {HEADER_BYTES}", p)
    # Parse the 1024 bytes ourselves: mrcfile would also read the extended header, whose size comes
    # from the header and can be gigabytes of garbage in a file that is not an MRC at all.
    with open(p, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).copy().view(np.recarray)[0]
    try:
        order = utils.byte_order_from_machine_stamp(header.machst)
    except ValueError:
        # Missing stamp (old files): pick the byte order in which the mode number makes sense.
        order = "<" if 0 <= int(header.mode) <= 16 else ">"
    if order == ">":
        header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(">")).copy().view(np.recarray)[0]
    stamp_ok = bytes(np.asarray(header.map).tobytes()) == b"MAP "
    if int(header.mode) in COMPLEX_MODES:
        raise InputError(f"complex MRC data (mode {int(header.mode)}) is not supported; a tomogram must be real", p)
    try:
        dtype = utils.dtype_from_mode(int(header.mode)).newbyteorder(order)
    except ValueError as exc:
        if stamp_ok:
            raise InputError(f"unsupported MRC data mode {int(header.mode)}", p) from exc
        raise InputError("not an MRC file (no 'MAP ' stamp and no valid data mode in the header)", p) from exc
    if dtype == np.int8 and _imod_unsigned_bytes(raw, order):
        dtype = np.dtype(np.uint8)
    nx, ny, nz = (int(header.nx), int(header.ny), int(header.nz))
    if min(nx, ny, nz) <= 0:
        raise InputError(f"not a valid MRC file: header dimensions nx={nx}, ny={ny}, nz={nz}", p)
    nsymbt = int(header.nsymbt)
    offset = HEADER_BYTES + max(nsymbt, 0)
    shape = (nz, ny, nx)
    expected = nx * ny * nz * dtype.itemsize
    if not stamp_ok:
        # Old (pre-2014) files lack the stamp; accept them only if the sizes agree exactly.
        if size != offset + expected:
            raise InputError("not an MRC file (no 'MAP ' stamp in the header and sizes do not match)", p)
        log.warning("%s: no 'MAP ' stamp in the MRC header; reading it as an old-style MRC file", p)
    if size < offset + expected:
        raise InputError(
            f"truncated MRC file: the header ({nx}x{ny}x{nz}, mode {int(header.mode)}) needs "
            f"{offset + expected} bytes but the file has only {size} bytes",
            p,
        )
    cella, grid = header.cella, (int(header.mx), int(header.my), int(header.mz))
    voxel = checked_voxel_size(header_voxel_size(cella, grid), voxel_size, p)
    org = header.origin
    origin = (float(org.z), float(org.y), float(org.x))
    if not all(np.isfinite(origin)):
        origin = (0.0, 0.0, 0.0)
    fields: dict[str, Any] = {}
    for name in header.dtype.names:
        if name in ("label", "extra1", "extra2", "map"):
            continue
        fields[name] = _plain(header[name])
    nlabl = max(0, min(int(header.nlabl), 10))
    fields["labels"] = [_plain(header.label[i]) for i in range(nlabl)]
    fields["machst"] = utils.pretty_machine_stamp(header.machst)
    if (int(header.mapc), int(header.mapr), int(header.maps)) != (1, 2, 3):
        log.warning("%s: non-standard MRC axis order (mapc, mapr, maps) = %s; data read as stored (ZYX)",
                    p, (int(header.mapc), int(header.mapr), int(header.maps)))
    return MrcHeader(str(p), shape, dtype, offset, voxel, origin, fields)


class MrcBlockReader:
    """Array-like view on the data block of an MRC file; every ``__getitem__`` opens its own memmap.

    Only plain attributes are pickled, so dask graphs built on it run on distributed workers.
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype, offset: int):
        self.path = str(path)
        self.shape = tuple(shape)
        self.file_dtype = np.dtype(dtype)
        self.dtype = self.file_dtype.newbyteorder("=")  # blocks come out in native byte order
        self.offset = int(offset)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        mm = np.memmap(self.path, dtype=self.file_dtype, mode="r", offset=self.offset, shape=self.shape)
        try:
            return np.array(mm[key], dtype=self.dtype)
        finally:
            del mm


def default_chunks(shape: tuple[int, ...], chunks: Any) -> Any:
    """``None`` means 128 voxels per axis (the measured default for convert), else passed to dask."""
    if chunks is None:
        return tuple(min(128, n) for n in shape)
    if isinstance(chunks, int):
        return tuple(min(chunks, n) for n in shape)
    return chunks


def open_mrc(
    path: str | os.PathLike, chunks: Any = None, *, allow_2d: bool = False,
    voxel_size: float | tuple[float, float, float] | None = None,
) -> xr.DataArray:
    """Open an MRC tomogram lazily as a ZYX volume (see :func:`deepict_dask.io.open_volume`)."""
    hdr = read_mrc_header(path, voxel_size)
    if hdr.shape[0] == 1 and not allow_2d:
        raise InputError(
            f"is a 2D image ({hdr.shape[2]}x{hdr.shape[1]} pixels, nz=1); a 3D tomogram is required", hdr.path
        )
    reader = MrcBlockReader(hdr.path, hdr.shape, hdr.dtype, hdr.data_offset)
    arr = da.from_array(
        reader,
        chunks=default_chunks(hdr.shape, chunks),
        lock=False,
        asarray=False,
        meta=np.empty((0, 0, 0), dtype=reader.dtype),
        name=f"mrc-{dask.base.tokenize(hdr.path, os.stat(hdr.path).st_mtime_ns, hdr.shape, str(hdr.dtype))}",
    )
    attrs = {"source": hdr.path, "format": "mrc", "mrc_header": hdr.fields}
    return make_volume(arr, hdr.voxel_size, hdr.origin, name=Path(hdr.path).stem, attrs=attrs)


# ---------------------------------------------------------------------------------------------- writing


def mrc_dtype_for(dtype: np.dtype) -> np.dtype:
    """The closest dtype an MRC file can hold (mode 0/1/2/4/6/12)."""
    dtype = np.dtype(dtype)
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16),
                 np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.complex64)):
        return dtype
    if dtype == np.bool_:
        return np.dtype(np.int8)
    if dtype.kind == "c":
        return np.dtype(np.complex64)
    return np.dtype(np.float32)  # float64 and wide integers (labels stay exact up to 2**24)


class MrcBlockWriter:
    """Writes blocks into the preallocated data area of an MRC file (the target of ``da.store``)."""

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype, offset: int):
        self.path = str(path)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        mm = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self.offset, shape=self.shape)
        try:
            mm[key] = value
            mm.flush()
        finally:
            del mm


def write_mrc(volume: xr.DataArray, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write a ZYX volume to an MRC file chunk by chunk (memory: a few chunks), atomically.

    The voxel size and origin go into the header; header statistics (min, max, mean, rms) are
    computed in the same pass as the data. Dtypes MRC cannot hold are converted (float64 ->
    float32, wide integers -> float32, bool -> int8).
    """
    import mrcfile

    from deepict_dask.io.progress import compute

    target = Path(path)
    arr = volume.data if isinstance(volume, xr.DataArray) else da.asarray(volume)
    if not isinstance(arr, da.Array):
        arr = da.from_array(np.asarray(arr))
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise InputError(f"MRC output needs a 3D (z, y, x) volume, got shape {arr.shape}", target)
    out_dtype = mrc_dtype_for(arr.dtype)
    arr = arr.astype(out_dtype)
    vs = voxel_size_of(volume) if isinstance(volume, xr.DataArray) else (1.0, 1.0, 1.0)
    org = origin_of(volume) if isinstance(volume, xr.DataArray) else (0.0, 0.0, 0.0)
    with atomic_path(target, overwrite=overwrite) as tmp:
        try:
            mrc = mrcfile.new_mmap(tmp, shape=arr.shape, mrc_mode=mrcfile.utils.mode_from_dtype(out_dtype))
        except OSError as exc:
            raise OutputError(f"cannot create MRC file: {exc.strerror}", target) from exc
        with mrc:
            mrc.voxel_size = (vs[2], vs[1], vs[0])
            mrc.header.origin = (org[2], org[1], org[0])
            offset = int(mrc.data.offset) if hasattr(mrc.data, "offset") else HEADER_BYTES + int(mrc.header.nsymbt)
            file_dtype = mrc.data.dtype
        writer = MrcBlockWriter(str(tmp), arr.shape, file_dtype, offset)
        stored = da.store(arr, writer, lock=False, compute=False)
        real = arr.real if out_dtype.kind == "c" else arr
        f64 = real.astype(np.float64)
        _, dmin, dmax, dmean, dsq = compute(stored, real.min(), real.max(), f64.mean(), (f64**2).mean())
        with mrcfile.mmap(tmp, mode="r+") as mrc:
            mrc.header.dmin = float(dmin)
            mrc.header.dmax = float(dmax)
            mrc.header.dmean = float(dmean)
            mrc.header.rms = float(np.sqrt(max(float(dsq) - float(dmean) ** 2, 0.0)))
    return target
