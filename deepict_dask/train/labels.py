"""Label volumes from annotations: spheres or oriented template masks painted lazily, chunk by chunk.

Each output chunk is computed independently (a Dask ``map_blocks``): only the particles whose
bounding sphere reaches the chunk are painted, so a 4096x4096x1000 label volume never exists in
memory. Label values are class ids (1, 2, ... in the order the classes are given; 0 = background).

**Overlap rule.** Where the shapes of several particles overlap, the voxel belongs to the particle
whose centre is nearest *relative to its size* (distance / radius: a power-diagram split), whatever
the order of the table; this splits touching particles along a plane between them instead of
letting the last one painted win. Existing masks (``masks``) are painted first; particles are
painted over them.

**Templates.** With a template mask (any binary volume, its centre at the middle voxel), each
particle pastes the mask rotated by its ZXZ Euler angles ``phi, theta, psi`` (degrees, scipy
``"ZXZ"``: ``R = Rz(phi) Rx(theta) Rz(psi)`` maps the template frame into the tomogram frame, both
``(x, y, z)``), the convention of the project's tables and simulator. Particles without angles use
the unrotated template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage
from scipy.spatial.transform import Rotation

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.io.volume import as_voxel_size, make_volume, spatial_shape

_RADIUS = re.compile(r"^\s*([^=\s]+)\s*=\s*([0-9]*\.?[0-9]+)\s*(A|Å|vx|px|voxels?)?\s*$", re.IGNORECASE)


def parse_radius(spec: str, voxel_size: float) -> tuple[str, float]:
    """``ribosome=120A`` (Angstrom) or ``fas=8`` / ``fas=8vx`` (voxels) -> (class, radius in voxels)."""
    m = _RADIUS.match(spec)
    if not m:
        raise ConfigError(f"bad radius {spec!r}: expected CLASS=NUMBER[A|vx], e.g. ribosome=120A or fas=8")
    name, value, unit = m.group(1), float(m.group(2)), (m.group(3) or "vx").lower()
    if value <= 0:
        raise ConfigError(f"radius of '{name}' must be positive")
    return name, value / voxel_size if unit in ("a", "å") else value


@dataclass
class Template:
    """A binary particle shape (ZYX) and its voxel size; centre at ``(n - 1) / 2``."""

    mask: np.ndarray
    voxel_size: float

    @property
    def radius_A(self) -> float:
        """Radius of the sphere around the centre that holds the whole mask (Å)."""
        idx = np.argwhere(self.mask)
        if not len(idx):
            return 0.0
        centre = (np.array(self.mask.shape) - 1) / 2
        return float(np.sqrt(((idx - centre) ** 2).sum(1)).max() + 1) * self.voxel_size


def load_template(path: str, threshold: float | None = None) -> Template:
    """A template mask from an MRC/Zarr volume; binarised at ``threshold`` (default: half its maximum)."""
    from deepict_dask.train.data import open_array

    vol = open_array(path)
    arr = np.asarray(vol.data.compute(), dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"template must be a 3D volume, got {arr.ndim} dimensions", path)
    if not np.isfinite(arr).all():
        raise InputError("template contains NaN or infinite values", path)
    thr = float(arr.max()) / 2 if threshold is None else threshold
    mask = arr > thr
    if not mask.any():
        raise InputError("template mask is empty", path)
    vs = float(np.mean(as_voxel_size(vol.attrs.get("voxel_size", 1.0))))
    return Template(mask, vs)


def _paint_block(block: np.ndarray, centres: np.ndarray, radii: np.ndarray, values: np.ndarray,
                 rotations: np.ndarray | None, template: Template | None, voxel_size: float,
                 block_info: dict | None = None) -> np.ndarray:
    loc = block_info[0]["array-location"] if block_info else [(0, s) for s in block.shape]
    lo = np.array([a for a, _ in loc])
    hi = np.array([b for _, b in loc])
    out = np.array(block, copy=True)
    best = np.full(out.shape, np.inf, np.float32)
    best[out != 0] = 1.0  # mask voxels: particles whose normalised distance is < 1 paint over them
    reach = np.ceil(radii)[:, None]
    hit = np.all((centres + reach >= lo) & (centres - reach <= hi - 1), axis=1)
    for i in np.flatnonzero(hit):
        c, r = centres[i], radii[i]
        a = np.maximum(np.floor(c - r).astype(int), lo)
        b = np.minimum(np.ceil(c + r).astype(int) + 1, hi)
        if np.any(b <= a):
            continue
        grids = np.meshgrid(*[np.arange(a[k], b[k]) for k in range(3)], indexing="ij")
        rel = np.stack([g - c[k] for k, g in enumerate(grids)])  # (3, ...) zyx voxels
        d = np.sqrt((rel**2).sum(0)) / r
        if template is None:
            inside = d <= 1.0
        else:
            rel_xyz_A = rel[::-1].reshape(3, -1) * voxel_size
            rot = rotations[i] if rotations is not None else np.eye(3)
            local = rot.T @ rel_xyz_A  # tomogram frame -> template frame (x, y, z), Å
            centre_t = (np.array(template.mask.shape) - 1) / 2
            coords = local[::-1] / template.voxel_size + centre_t[:, None]
            sampled = ndimage.map_coordinates(template.mask.astype(np.float32), coords, order=1, cval=0.0)
            inside = sampled.reshape(d.shape) > 0.5
        sl = tuple(slice(a[k] - lo[k], b[k] - lo[k]) for k in range(3))
        win = inside & (d < best[sl])
        out[sl][win] = values[i]
        best[sl][win] = d[win]
    return out


def paint_labels(
    table: pd.DataFrame,
    shape: Sequence[int],
    voxel_size: float,
    radii: Mapping[str, float],
    *,
    class_ids: Mapping[str, int] | None = None,
    template: Template | None = None,
    masks: Mapping[str, xr.DataArray] | None = None,
    chunks: int | Sequence[int] = 128,
) -> tuple[da.Array, dict[str, int]]:
    """Lazy label volume (uint8/uint16 dask array) and its ``class -> id`` mapping.

    ``table`` is in the project's schema (``class``, voxel ``x, y, z``; ``phi, theta, psi`` used
    with a template). ``radii`` gives each particle class's sphere radius in voxels; with a
    ``template`` it only bounds the search and the template's own extent is used. ``masks`` are
    existing binary/label volumes of further classes (non-zero = class).

    Parameters
    ----------
    table : DataFrame
        The particles (project schema).
    shape : sequence of int
        The volume's shape, z, y, x.
    voxel_size : float
        Angstrom per voxel (converts the template's size).
    radii : mapping of str to float
        Class -> sphere radius in voxels.
    class_ids : mapping of str to int, optional
        Class -> label value (default: 1, 2, ... for the ``radii`` classes, then the ``masks`` ones).
    template : Template, optional
        A shape to paint, rotated by each particle's angles, instead of spheres.
    masks : mapping of str to DataArray, optional
        Class -> a volume whose non-zero voxels are that class.
    chunks : int or sequence of int
        Chunks of the label volume.

    Returns
    -------
    (dask.array.Array, dict)
        The lazy label volume (uint8, or uint16 beyond 255 classes) and ``class -> id``.
    """
    shape = tuple(int(s) for s in shape)
    masks = dict(masks or {})
    names = list(radii) + [m for m in masks if m not in radii]
    ids = dict(class_ids) if class_ids else {n: i + 1 for i, n in enumerate(names)}
    missing = [n for n in names if n not in ids]
    if missing:
        raise ConfigError(f"no class id for {missing}")
    dtype = np.uint8 if max(ids.values()) < 256 else np.uint16
    if len(table):
        unknown = sorted(set(table["class"].astype(str)) - set(radii))
        if unknown:
            raise ConfigError(f"classes {unknown} in the table have no radius (given: {sorted(radii)}; on the command line --radius)")
    base = da.zeros(shape, dtype=dtype, chunks=chunks)
    for name, vol in masks.items():
        if spatial_shape(vol) != shape:
            raise InputError(f"mask for '{name}' has shape {spatial_shape(vol)}, the tomogram {shape}",
                             vol.attrs.get("source"))
        base = da.where(vol.data.rechunk(base.chunks) != 0, dtype(ids[name]), base)
    if not len(table):
        return base, ids
    t = table[table["class"].astype(str).isin(list(radii))]
    centres = t[["z", "y", "x"]].to_numpy(np.float64)
    values = np.array([ids[c] for c in t["class"].astype(str)], dtype=dtype)
    rotations = None
    if template is not None:
        r_t = template.radius_A / voxel_size
        radius = np.full(len(t), r_t)
        if {"phi", "theta", "psi"} <= set(t.columns):
            ang = t[["phi", "theta", "psi"]].to_numpy(np.float64)
            ang = np.nan_to_num(ang, nan=0.0)
            rotations = Rotation.from_euler("ZXZ", ang, degrees=True).as_matrix()
    else:
        radius = np.array([radii[c] for c in t["class"].astype(str)], np.float64)
    painted = base.map_blocks(_paint_block, centres, radius, values, rotations, template, float(voxel_size),
                              dtype=dtype)
    return painted, ids


def labels_volume(data: da.Array, like: xr.DataArray, class_ids: Mapping[str, int], name: str = "labels") -> xr.DataArray:
    """Wrap a painted label array with the reference tomogram's voxel size and origin."""
    from deepict_dask.io.volume import origin_of, voxel_size_of

    return make_volume(data, voxel_size_of(like), origin_of(like), name=name,
                       attrs={"class_ids": dict(class_ids)})


def particles_inside(paths: Sequence[str], like: xr.DataArray, *, tomo: str | None = None,
                     like_name: str | None = None) -> tuple[pd.DataFrame, int]:
    """The particles of ``paths`` to paint into ``like``, and how many were skipped outside it.

    Parameters
    ----------
    paths
        Coordinate tables (any format :mod:`deepict_dask.io.tables` reads).
    like
        The tomogram the labels are painted on: its voxel size and shape check the tables.
    tomo
        Keep only rows of this tomogram; by default ``like_name`` when the tables name several.
    like_name
        The reference tomogram's name (its file name without suffixes).

    Returns
    -------
    (pandas.DataFrame, int)
        The rows whose centre lies inside the volume, and the number of rows outside it (skipped
        with a warning). Tables whose units disagree with the volume, a tomogram with no rows and a
        table with no particle inside are refused: they would paint nothing.
    """
    from deepict_dask.io.coords import read_tables
    from deepict_dask.io.table_checks import check_table
    from deepict_dask.io.volume import voxel_size_of

    table = read_tables(list(paths), voxel_size=voxel_size_of(like), shape=spatial_shape(like))
    if tomo is None and table["tomo"].nunique() > 1:
        tomo = like_name
    if tomo is not None:
        table = table[table["tomo"].astype(str) == tomo]
        if table.empty:
            raise ConfigError(f"no particles of tomogram '{tomo}' in the table(s) (use --tomo NAME)")
    source = paths[0] if len(paths) == 1 else ", ".join(map(str, paths))
    inside = check_table(table, voxel_size=voxel_size_of(like), shape=spatial_shape(like), path=source,
                         require_inside=True)
    return table[inside], int((~inside).sum())


def write_label_volume(vol: xr.DataArray, out: str | Path, class_ids: Mapping[str, int], *, chunks: int = 128) -> Path:
    """Write a label volume: OME-Zarr with the class ids in its attributes, or an MRC (``.mrc``,
    ``.rec``, ``.map``) with them in ``OUT.json`` beside it (MRC headers cannot hold them).

    Both are written atomically and replace an existing output (the caller decides whether one may be
    replaced).
    """
    import json

    from deepict_dask.io import write_mrc, write_ome_zarr
    from deepict_dask.io.atomic import atomic_path

    out = Path(out)
    if out.suffix.lower() in (".mrc", ".rec", ".map"):
        write_mrc(vol, out, overwrite=True)
        with atomic_path(Path(str(out) + ".json")) as tmp:
            tmp.write_text(json.dumps({"class_ids": dict(class_ids)}, indent=2))
    else:
        write_ome_zarr(vol, out, levels=1, chunks=chunks, attrs={"class_ids": dict(class_ids)}, overwrite=True)
    return out
