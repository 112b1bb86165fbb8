"""``watershed``: split touching particles by a seeded watershed, block by block.

Connected components merge touching ribosomes into one cluster with one centroid. Here every block
is processed together with a halo of at least one particle diameter:

1. seeds are found on block + halo (:mod:`.seeds`: maxima of the distance transform of the
   foreground, or of the smoothed probability map, at least ``min_distance`` apart); the decision
   is local and ties are broken by global raster index, so every block agrees on every seed;
2. a watershed floods the descending landscape from those seeds inside the foreground
   (``skimage.segmentation.watershed``);
3. only the block's core is kept, each voxel labelled with the *key* of its basin's seed (its
   global raster index + 1). Pieces of one basin seen by several blocks carry the same key and are
   merged by the pick stage's group-by, so labels are global without any block exchanging labels.

Foreground that no seed reaches within the crop (a fragment whose maximum lies outside the crop)
becomes its own cluster, keyed by its highest voxel, so no foreground is dropped. Results are
independent of chunking as long as a basin fits in the halo, which the default halo (twice the
seed distance, or the ``diameter`` given) ensures for particles; for large structures (membranes,
filaments) use method ``cc``.

With ``coarsen`` > 1 (the default for particles whose seeds are 8+ voxels apart) steps 1-2 run on
a grid binned by that factor and anchored to the volume; step 3 labels the full-resolution core
(:func:`_split_coarse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from deepict_dask.errors import ConfigError
from deepict_dask.pick import seeds as sd
from deepict_dask.pick.label import BlockContext, ClusterMethod
from deepict_dask.pick.methods import MethodParams, register_method
from deepict_dask.units import Length, LengthField

_WS_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


class WatershedParams(MethodParams):
    """Seeded watershed: the settings :func:`split_params` documents (lengths as :data:`LengthField`)."""

    name: Literal["watershed"] = "watershed"
    min_distance: LengthField | None = Field(None, description="seeds closer than this are one particle "
                                             "(default: the expected particle radius)")
    seeds: Literal["edt", "prob"] | None = Field(None, description="seed landscape: the mask's distance "
                                                 "transform (edt, default) or the smoothed probability (prob)")
    sigma: float | None = Field(None, ge=0, description="Gaussian sigma (voxels) of the seed landscape")
    h_maxima: float | None = Field(None, ge=0, description="ignore maxima less than this above their surroundings")
    diameter: LengthField | None = Field(None, description="largest particle diameter (sets the halo)")
    coarsen: int | Literal["auto"] = Field("auto", description="bin factor of the seed grid (auto: seeds stay "
                                           "4 bins apart; 1: full resolution)")

    @field_validator("min_distance")
    @classmethod
    def _positive(cls, value: Length | None) -> Length | None:
        if value is not None and not value.value > 0:
            raise ValueError(f"must be > 0, got {value}: seeds closer than this are merged")
        return value

    @field_validator("coarsen")
    @classmethod
    def _whole_bins(cls, value: Any) -> Any:
        if value != "auto" and value < 1:
            raise ValueError("must be 'auto' or a whole number >= 1")
        return value

    def block_params(self, radius: Length | None) -> dict[str, Any]:
        """Lengths keep their unit (``"80A"``/``"8vx"``); the expected radius is the default seed distance."""
        params = super().block_params(radius)
        params["radius"] = None if radius is None else str(radius)
        return params


def split_params(
    method: str,
    *,
    min_distance: float | str | None,
    voxel_size: Sequence[float],
    shape: Sequence[int] | None,
    radius: float | str | None = None,
    seeds: str | None = None,
    sigma: float | None = None,
    h_maxima: float | None = None,
    diameter: float | str | None = None,
    coarsen: int | str | None = None,
) -> dict[str, Any]:
    """Validated parameters of ``watershed`` / ``peaks`` (the ``params`` of the pick stage).

    Parameters
    ----------
    method : str
        ``"watershed"`` or ``"peaks"``.
    min_distance : float or str, optional
        Seeds closer than this are one particle (voxels, or a string like ``"80A"``); default: the
        expected particle ``radius`` (one of the two is required).
    voxel_size : sequence of float
        The map's voxel size (z, y, x, Angstrom), to convert Angstrom lengths.
    shape : sequence of int, optional
        The map's shape, to check a distance against it.
    radius : float or str, optional
        The expected particle radius (voxels or a length string).
    seeds : str, optional
        ``edt`` (default for watershed: the mask's shape decides) or ``prob`` (default and only
        choice for peaks).
    sigma : float, optional
        Gaussian smoothing (voxels) of the seed landscape (default 1 for ``prob``, 0 for ``edt``).
    h_maxima : float, optional
        Ignore maxima less than ``h`` above their surroundings (probability units for ``prob``,
        voxels for ``edt``).
    diameter : float or str, optional
        The largest particle diameter, which sets the halo (default twice the radius or
        ``min_distance``, whichever is larger).
    coarsen : int or str, optional
        Find seeds and basins on a grid this many times coarser (``"auto"``, the default: as coarse
        as keeps seeds at least :data:`COARSE_MIN_DISTANCE` voxels apart; ``1``: full resolution;
        see :func:`coarse_factor`).

    Returns
    -------
    dict
        ``method``, ``coarsen`` (the bin factor), ``min_distance_vox`` (z, y, x), ``seeds``,
        ``sigma``, ``h_maxima``, ``diameter_vox`` and ``spacing`` (the voxel size), JSON-ready.

    Raises
    ------
    ConfigError
        A missing distance, an unknown method or seed source, or a negative ``sigma``/``h_maxima``.
    """
    if method not in ("watershed", "peaks"):
        raise ConfigError(f"unknown splitting method {method!r}")
    if min_distance is None:
        if radius is None:
            raise ConfigError(
                f"method {method} needs min_distance (e.g. 80A, about the particle radius) "
                "or an expected particle radius"
            )
        min_distance = radius
    radii = sd.min_distance_voxels(min_distance, voxel_size, shape)
    source = seeds or ("prob" if method == "peaks" else "edt")
    if source not in sd.SEED_SOURCES:
        raise ConfigError(f"seeds must be one of {list(sd.SEED_SOURCES)}, got {source!r}")
    if method == "peaks" and source != "prob":
        raise ConfigError("method peaks picks maxima of the probability map; seeds edt applies to watershed")
    sigma = float(sigma) if sigma is not None else (1.0 if source == "prob" else 0.0)
    if not np.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma must be >= 0 voxels, got {sigma}")
    h = None if h_maxima is None else float(h_maxima)
    if h is not None and (not np.isfinite(h) or h < 0):
        raise ConfigError(f"h_maxima must be >= 0, got {h_maxima}")
    if diameter is not None:
        diam = max(sd.min_distance_voxels(diameter, voxel_size, None))
    elif radius is not None:
        diam = 2.0 * max(max(sd.min_distance_voxels(radius, voxel_size, None)), max(radii))
    else:
        diam = 2.0 * max(radii)
    return {
        "method": method,
        "coarsen": coarse_factor(coarsen, radii),
        "min_distance_vox": radii,
        "seeds": source,
        "sigma": sigma,
        "h_maxima": h,
        "diameter_vox": diam,
        "spacing": tuple(float(v) for v in voxel_size),
    }


PARAM_KEYS = ("min_distance", "radius", "seeds", "sigma", "h_maxima", "diameter", "coarsen")

# Seeds at least this many (coarse) voxels apart still sit on well-resolved distance-transform or
# probability maxima; ``coarsen="auto"`` bins the map as far as keeps them so.
COARSE_MIN_DISTANCE = 4.0


def coarse_factor(coarsen: int | str | None, radii: Sequence[float]) -> int:
    """The bin factor of the seed and flood grid (see :func:`split_block`).

    Why: the distance transform and the flood cost as much as the whole connected-components pass
    each; on a 2x coarser grid they cost 8x less, while particles a few voxels wide keep their
    maxima, and centroids, sizes and scores still come from the full-resolution voxels.
    """
    if coarsen is None or str(coarsen).strip().lower() == "auto":
        return max(1, int(min(radii) // COARSE_MIN_DISTANCE))
    try:
        factor = int(str(coarsen).strip())
    except ValueError:
        factor = 0
    if factor < 1 or str(factor) != str(coarsen).strip():
        raise ConfigError(f"coarsen must be 'auto' or a whole number >= 1, got {coarsen!r}")
    return factor


def resolve_params(method: str, params: dict[str, Any], voxel_size, shape: Sequence[int] | None = None) -> dict[str, Any]:
    """``params`` from :meth:`WatershedParams.block_params` (keys :data:`PARAM_KEYS`; the pick stage
    adds keys of its own), validated against the map; resolved ones (from :func:`split_params`) pass."""
    if "min_distance_vox" in params:
        return params
    return split_params(method, voxel_size=voxel_size, shape=shape, **{k: params.get(k) for k in PARAM_KEYS})


def split_halo(method: str, params: dict[str, Any], voxel_size) -> int:
    """Halo of a block for ``watershed`` / ``peaks`` (see :func:`.seeds.seed_halo`)."""
    p = resolve_params(method, params, voxel_size)
    b = int(p.get("coarsen", 1))
    # coarse cells cut by the block's outer edge see only part of their voxels: one cell more
    return sd.seed_halo(p["min_distance_vox"], p["sigma"], p.get("diameter_vox")) + (b if b > 1 else 0)


def _prepare(method: str, raw, mask, spec, params: dict[str, Any], voxel_size) -> dict[str, Any]:
    """The pick stage's ``prepare`` step: validate the options against the map (its shape and
    voxel size) before any block runs; the result travels to every block as its state."""
    return resolve_params(method, params, voxel_size, tuple(int(n) for n in raw.shape[-3:]))


def split_block(
    fg: np.ndarray,
    prob: np.ndarray,
    core: tuple[slice, slice, slice],
    array_origin: Sequence[int],
    global_shape: Sequence[int],
    params: dict[str, Any],
    connectivity: int = 26,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the foreground of one block (+ halo) into basins.

    Returns (labels over ``core``: uint32 compact 1..n, ``keys`` uint64 per local label = global
    raster index of the basin's seed + 1, ``peak`` float32 per local label = landscape at the seed,
    in full-resolution units also when ``params["coarsen"] > 1``).
    """
    method = params["method"]
    if params["seeds"] == "prob" and sd.looks_binary(prob, fg):
        raise sd.binary_error(method)
    if int(params.get("coarsen", 1)) > 1:
        return _split_coarse(fg, prob, core, array_origin, global_shape, params, connectivity)
    return _split(fg, prob, core, array_origin, global_shape, params, connectivity)[:3]


def _split(fg, prob, core, array_origin, global_shape, params, connectivity):
    """:func:`split_block` at full resolution; also returns the landscape."""
    import cc3d
    from scipy import ndimage

    land = sd.landscape(fg, prob, params["seeds"], params["sigma"], params.get("spacing", (1, 1, 1)))
    comp, n = cc3d.connected_components(fg, connectivity=connectivity, return_N=True)
    # cluster boxes: for the h-maxima test, orphans and floods; found once, only when one needs them
    boxes = ndimage.find_objects(comp) if params["h_maxima"] else None
    coords, gidx = sd.find_seeds(land, fg, params["min_distance_vox"], h=params["h_maxima"],
                                 array_origin=array_origin, global_shape=global_shape, comp=comp, boxes=boxes)
    k = len(coords)
    # a cluster with one seed is one basin; only clusters with several seeds are flooded (each in its
    # bounding box), which gives exactly the watershed of the whole block at a fraction of the cost
    seed_comp = comp[tuple(coords.T)].astype(np.int64)
    count = np.bincount(seed_comp, minlength=n + 1)
    count[0] = -1
    comp_label = np.zeros(n + 1, np.int32)
    single = count[seed_comp] == 1
    comp_label[seed_comp[single]] = np.flatnonzero(single) + 1
    keys = gidx.astype(np.uint64) + np.uint64(1)
    peaks = land[tuple(coords.T)].astype(np.float32)
    orphan = np.flatnonzero(count == 0)
    multi = np.flatnonzero(count >= 2)
    if boxes is None and (len(orphan) or len(multi)):
        boxes = ndimage.find_objects(comp)
    if len(orphan):
        comp_label[orphan] = k + 1 + np.arange(len(orphan))
        extra_keys, extra_peaks = _orphan_keys(comp, orphan, boxes, land, array_origin, global_shape)
        keys = np.concatenate([keys, extra_keys])
        peaks = np.concatenate([peaks, extra_peaks])
    # only the core is labelled; floods write where their box meets it
    labs = comp_label[comp[core]]
    if len(multi):
        _flood(labs, core, comp, boxes, multi, seed_comp, coords, land, array_origin, connectivity)
    lut, present = _compaction(labs.ravel(), len(keys))
    return lut[labs], keys[present - 1], peaks[present - 1], land


def _compaction(used: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Of labels 1..n, those found in ``used``: (lookup table to 1..k, their old labels)."""
    present = np.flatnonzero(np.bincount(used, minlength=n + 1)[1:]) + 1
    lut = np.zeros(n + 1, np.uint32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    return lut, present


def _split_coarse(
    fg: np.ndarray,
    prob: np.ndarray,
    core: tuple[slice, slice, slice],
    array_origin: Sequence[int],
    global_shape: Sequence[int],
    params: dict[str, Any],
    connectivity: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`split_block` on a grid ``b = params["coarsen"]`` times coarser, mapped back.

    The coarse grid is anchored to the volume (cell ``C`` holds voxels ``C*b .. C*b+b-1``), so every
    block bins alike and results stay independent of chunking. A cell is foreground when any of
    its voxels is, and carries their mean probability. Seeds, basins and their ties are decided on
    the coarse grid (distances and sigma divided by ``b``); each foreground voxel of the core then
    takes its cell's basin, so sizes, centroids and scores come from the full-resolution voxels.
    A basin's key is the voxel of its seed cell nearest to the landscape's interpolated maximum
    (:func:`_fine_keys`), which ``peaks`` reports as the peak position.
    """
    b = int(params["coarsen"])
    origin = np.asarray(array_origin, np.int64)
    front = origin % b
    back = (-(front + np.asarray(fg.shape))) % b
    pad = tuple((int(f), int(k)) for f, k in zip(front, back))
    padded = any(f or k for f, k in pad)
    cfg = _bin(np.pad(fg, pad) if padded else fg, b, np.logical_or)
    if params["seeds"] == "prob":
        probp = np.asarray(prob, np.float32)
        cprob = _bin(np.pad(probp, pad) if padded else probp, b, np.add)
        cprob *= np.float32(1.0 / b**3)
    else:
        cprob = cfg  # the distance transform needs only the mask
    cparams = dict(params, coarsen=1, min_distance_vox=tuple(r / b for r in params["min_distance_vox"]),
                   sigma=params["sigma"] / b, diameter_vox=params.get("diameter_vox", 0.0) / b)
    if params["h_maxima"] is not None and params["seeds"] == "edt":
        cparams["h_maxima"] = params["h_maxima"] / b  # voxels; probability heights stay as they are
    corigin = (origin - front) // b
    cglobal = tuple(-(-int(n) // b) for n in global_shape)
    lo = [(sl.start + f) // b for sl, f in zip(core, front)]
    hi = [-(-(sl.stop + f) // b) for sl, f in zip(core, front)]
    ccore = tuple(slice(int(a), int(c)) for a, c in zip(lo, hi))
    clabels, ckeys, cpeaks, cland = _split(cfg, cprob, ccore, tuple(int(o) for o in corigin), cglobal, cparams,
                                           connectivity)
    # labels present in the core: cells holding a foreground voxel *of the core*; compacted on the
    # coarse grid, then every core voxel takes its cell's label
    fgc = fg[core]
    cpad = tuple((int((sl.start + f) % b), 0) for sl, f in zip(core, front))
    cpad = tuple((a, int(-(n + a) % b)) for (a, _), n in zip(cpad, fgc.shape))
    in_core = _bin(np.pad(fgc, cpad), b, np.logical_or)
    lut, present = _compaction(clabels[in_core], len(ckeys))
    labs = lut[clabels]
    for axis, (sl, f, a) in enumerate(zip(core, front, lo)):
        labs = labs.take((np.arange(sl.start, sl.stop) + f) // b - a, axis=axis)
    keys = _fine_keys(ckeys[present - 1], cland, corigin, b, cglobal, global_shape)
    peaks = cpeaks[present - 1] * np.float32(b if params["seeds"] == "edt" else 1)  # distances in voxels
    return np.where(fgc, labs, np.uint32(0)), keys, peaks


def _bin(arr: np.ndarray, b: int, combine: np.ufunc) -> np.ndarray:
    """Combine each ``b^3`` cell of ``arr`` (shape a multiple of ``b``) with ``combine`` (or, add),
    one axis at a time over strided views (10x faster than reducing a 6D reshape)."""
    for axis in range(3):
        view = [slice(None)] * 3
        view[axis] = slice(0, None, b)
        out = arr[tuple(view)].copy()
        for i in range(1, b):
            view[axis] = slice(i, None, b)
            combine(out, arr[tuple(view)], out=out)
        arr = out
    return arr


def _fine_keys(ckeys: np.ndarray, cland: np.ndarray, corigin: np.ndarray, b: int, cglobal: tuple[int, ...],
               global_shape: Sequence[int]) -> np.ndarray:
    """Global keys (raster index + 1) of full-resolution voxels for coarse seed cells.

    Per axis, a parabola through the landscape at the seed cell and its two neighbours places the
    maximum inside the cell (a plateau or a flat top is centred, not pushed to a corner); the key is
    the cell's voxel nearest to it, so keys stay unique and ``peaks`` reports a voxel position.
    """
    if len(ckeys) == 0:
        return np.zeros(0, np.uint64)
    cells = np.stack(np.unravel_index((ckeys - np.uint64(1)).astype(np.int64), cglobal), axis=1)
    local = cells - corigin
    pos = np.empty(cells.shape, np.float64)
    for a in range(3):
        n = cland.shape[a]
        lo, hi = local.copy(), local.copy()
        lo[:, a] = np.maximum(local[:, a] - 1, 0)
        hi[:, a] = np.minimum(local[:, a] + 1, n - 1)
        f0, fm, fp = (cland[tuple(c.T)].astype(np.float64) for c in (local, lo, hi))
        curv = fm - 2 * f0 + fp
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where((curv < 0) & (lo[:, a] < local[:, a]) & (hi[:, a] > local[:, a]),
                             0.5 * (fm - fp) / curv, 0.0)
        pos[:, a] = (cells[:, a] + 0.5 + np.clip(shift, -0.5, 0.5)) * b - 0.5
    best = np.clip(np.floor(pos + 0.5).astype(np.int64), cells * b, cells * b + b - 1)
    best = np.minimum(best, np.asarray(global_shape, np.int64) - 1)
    return np.ravel_multi_index(tuple(best.T), tuple(global_shape)).astype(np.uint64) + np.uint64(1)


def _flood(labs, core, comp, boxes, multi, seed_comp, coords, land, array_origin, connectivity) -> None:
    """Seeded watershed of each cluster in ``multi`` inside its bounding box; the part of each box
    inside ``core`` is written into ``labs`` (the core's labels)."""
    from skimage.segmentation import watershed

    order = np.argsort(seed_comp, kind="stable")
    starts = np.searchsorted(seed_comp[order], multi)
    ends = np.searchsorted(seed_comp[order], multi, side="right")
    core_lo = np.array([sl.start for sl in core])
    core_hi = np.array([sl.stop for sl in core])
    for c, a, b in zip(multi, starts, ends):
        box = boxes[c - 1]
        lo = np.array([sl.start for sl in box])
        hi = np.array([sl.stop for sl in box])
        cut_lo, cut_hi = np.maximum(lo, core_lo), np.minimum(hi, core_hi)
        if np.any(cut_hi <= cut_lo):
            continue  # the cluster lies in the halo only
        inside = comp[box] == c
        markers = np.zeros(inside.shape, np.int32)
        mine = order[a:b]
        markers[tuple((coords[mine] - lo).T)] = mine + 1
        flood = _tie_broken(land[box], np.asarray(array_origin) + lo)
        ws = watershed(flood, markers, mask=inside, connectivity=_WS_CONNECTIVITY[connectivity])
        src = tuple(slice(int(u - v), int(w - v)) for u, w, v in zip(cut_lo, cut_hi, lo))
        dst = tuple(slice(int(u - v), int(w - v)) for u, w, v in zip(cut_lo, cut_hi, core_lo))
        sel = inside[src]
        labs[dst][sel] = ws[src][sel]


def _tie_broken(land: np.ndarray, box_origin: Sequence[int], eps: float = 1e-6) -> np.ndarray:
    """The flooding image ``-land`` plus a tiny offset that depends only on the global voxel
    position, so that who wins a tied voxel is the same in every block that floods it, even one
    that sees only part of a long cluster."""
    steps = (0.7548776662466927, 0.5698402909980532, 0.4301597090019468)
    z, y, x = (steps[a] * (np.arange(n) + int(box_origin[a])) for a, n in enumerate(land.shape))
    out = np.empty(land.shape, np.float64)
    np.add((z[:, None] + y[None, :])[:, :, None], x[None, None, :], out=out)
    np.mod(out, 1.0, out=out)
    out *= eps
    out -= land
    return out


def _orphan_keys(comp, orphan, boxes, land, array_origin, global_shape) -> tuple[np.ndarray, np.ndarray]:
    """Keys of seedless clusters (a fragment whose maximum lies outside the crop, or a bump
    suppressed by a higher seed of another cluster): their highest voxel, ties to the lowest global
    raster index, so that every block names the fragment alike."""
    keys = np.zeros(len(orphan), np.uint64)
    vals = np.zeros(len(orphan), np.float32)
    for i, c in enumerate(orphan):
        box = boxes[c - 1]
        sub = comp[box]
        local = np.flatnonzero(sub == c)
        pos = np.stack(np.unravel_index(local, sub.shape), axis=1) + np.array(
            [sl.start for sl in box]) + np.asarray(array_origin, np.int64)
        gidx = np.ravel_multi_index(tuple(pos.T), tuple(global_shape)).astype(np.int64)
        val = land[box].ravel()[local]
        best = np.lexsort((gidx, -val))[0]
        keys[i], vals[i] = np.uint64(gidx[best]) + np.uint64(1), val[best]
    return keys, vals


def _array_origin(ctx: BlockContext) -> tuple[int, int, int]:
    return tuple(int(o) - int(c.start) for o, c in zip(ctx.origin, ctx.core))


def split_label_block(fg: np.ndarray, prob: np.ndarray, votes: np.ndarray | None, ctx: BlockContext):
    """:class:`~.label.ClusterMethod` adapter: labels over the core and their global keys."""
    params = ctx.state if isinstance(ctx.state, dict) and "min_distance_vox" in ctx.state else ctx.params
    labels, keys, _ = split_block(fg, prob, ctx.core, _array_origin(ctx), ctx.shape, params, ctx.spec.connectivity)
    return labels, keys


def split_method(name: str, params: type[MethodParams]) -> ClusterMethod:
    """The :class:`~.label.ClusterMethod` of ``watershed`` or ``peaks``."""
    return ClusterMethod(name, split_label_block, merge_touching=False, halo=partial(split_halo, name),
                         prepare=partial(_prepare, name), params=params)


WATERSHED = split_method("watershed", WatershedParams)
register_method(WATERSHED)


def split_volume(
    prob: np.ndarray,
    threshold: float,
    params: dict[str, Any],
    *,
    connectivity: int = 26,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-memory reference: the whole volume as one block (labels 1..n, keys, seed values).

    A binary mask is accepted as ``prob`` (values 0/1, threshold e.g. 0.5) for ``seeds="edt"``.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 3:
        raise ConfigError(f"expected a 3D map, got {prob.ndim} dimensions")
    fg = prob >= np.float32(threshold)
    core = tuple(slice(0, n) for n in prob.shape)
    return split_block(fg, prob, core, (0, 0, 0), prob.shape, params, connectivity)
