"""Globally consistent cluster labels over a chunked volume, without ever holding the volume.

How it works (one pass over the data, then one small in-memory step):

1. every block is labelled on its own (``cc3d``, same result as ``scipy.ndimage.label``) and its
   labels are shifted by a *fixed* offset, the number of voxels in all earlier blocks, so no block
   waits for another's label count (dask-image chains a running total instead);
2. the same task reduces the block to per-label partial sums (:mod:`.stats`) and keeps only its six
   boundary planes;
3. for every pair of face-adjacent blocks, a small task compares the two touching planes (extended
   by one row/column from the diagonal neighbours when connectivity is 18/26) and emits the pairs of
   labels that touch;
4. one union-find over those pairs (:func:`.stats.merge_partials`) decides which partial labels are
   one cluster; clusters are numbered in raster order of their first voxel, which is exactly
   ``scipy.ndimage.label``'s numbering whatever the chunking.

The label image itself is only materialised when asked for (:func:`label_image`): each block is
labelled again (cheap) and mapped through a per-block lookup table.

Extension point: a clustering method is a :class:`ClusterMethod` registered in
:data:`deepict_dask.pick.methods.METHODS` (one module per method there). Its ``label_block`` turns one block (plus an optional halo) into compact local
labels; ``merge_touching`` says whether clusters touching across a block face are one cluster;
``prepare`` may compute global state first (mean-shift centres, watershed seeds).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from deepict_dask.errors import InputError
from deepict_dask.pick import stats as st
from deepict_dask.pick.threshold import foreground, to_probability

CONNECTIVITIES = (6, 18, 26)


@dataclass(frozen=True)
class BlockSpec:
    """Everything a block task needs to turn stored values into foreground and probabilities.

    ``channels``: for a 4D map, the channel indices this pick uses; with ``softmax`` the map is
    DeepFinder-style: ``channels`` are all class channels, the foreground probability is
    ``1 - p[background]`` (or the sum of the class channels when the background channel was dropped,
    as ``deepict predict`` does) and each voxel votes for its most probable class.
    ``mask_mode`` (the block's mask is boolean): ``"multiply"`` / ``"multiply_inverse"`` apply it before
    thresholding (intersection); ``"count"`` only counts cluster voxels inside the mask (contact).
    """

    threshold: float
    scale: float = 1.0
    connectivity: int = 26
    channels: tuple[int, ...] = ()
    softmax: bool = False
    background: int | None = None
    mask_mode: str | None = None


@dataclass(frozen=True)
class BlockContext:
    """Where a block sits: ``origin`` (global z, y, x of its core), ``core`` (the core inside the
    arrays handed to the method, which may carry a halo), the global ``shape``, its fixed label
    ``offset``, and the method's global ``state``."""

    block_id: tuple[int, int, int]
    origin: tuple[int, int, int]
    core: tuple[slice, slice, slice]
    shape: tuple[int, int, int]
    offset: int
    spec: BlockSpec
    halo: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    state: Any = None


# label_block(fg, prob, votes, ctx) -> (labels over the core, uint32 compact 1..n; keys or None)
LabelFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", BlockContext], "tuple[np.ndarray, np.ndarray | None]"]


@dataclass(frozen=True)
class ClusterMethod:
    """A way of turning foreground into clusters (see the module docstring)."""

    name: str
    label_block: LabelFn
    merge_touching: bool = True
    halo: Callable[[dict[str, Any], tuple[float, float, float]], int] | None = None
    prepare: Callable[..., Any] | None = None
    params: type | None = None  # the method's settings, a ``pick.methods.MethodParams`` subclass


# ----------------------------------------------------------------------------------------------
# one block
# ----------------------------------------------------------------------------------------------


def block_prob(raw: np.ndarray, mask: np.ndarray | None, spec: BlockSpec) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Stored block -> (probability used for clustering and scores, class votes, value range).

    The value range is measured on the stored map before any mask is applied so that a bad map is
    reported even where the mask hides it.
    """
    prob_all = to_probability(raw, spec.scale)
    rng = {"vmin": float(np.nanmin(prob_all)) if prob_all.size else 0.0,
           "vmax": float(np.nanmax(prob_all)) if prob_all.size else 0.0,
           "nan": bool(np.isnan(prob_all).any())}
    votes = None
    if prob_all.ndim == 4:
        if spec.softmax:
            classes = prob_all[list(spec.channels)]
            prob = 1.0 - prob_all[spec.background] if spec.background is not None else classes.sum(axis=0)
            votes = np.argmax(classes, axis=0).astype(np.int32)
        elif len(spec.channels) == 1:
            prob = prob_all[spec.channels[0]]
        else:
            raise InputError("a multi-label (sigmoid) map is picked one class at a time")
    else:
        prob = prob_all
    if spec.mask_mode in ("multiply", "multiply_inverse") and mask is not None:
        inside = np.asarray(mask, dtype=bool)
        prob = np.where(inside if spec.mask_mode == "multiply" else ~inside, prob, np.float32(0))
    return np.asarray(prob, dtype=np.float32), votes, rng


def _faces(labels: np.ndarray, keys: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """First and last plane along each axis, as global keys (0 = background)."""
    lut = np.concatenate([np.zeros(1, np.uint64), keys.astype(np.uint64)])
    out = {}
    for axis in range(3):
        n = labels.shape[axis]
        out[(axis, 0)] = lut[np.take(labels, 0, axis=axis)]
        out[(axis, 1)] = lut[np.take(labels, n - 1, axis=axis)]
    return out


def block_pass(raw: np.ndarray, mask: np.ndarray | None, method: ClusterMethod, ctx: BlockContext, want_faces: bool,
               state: Any = None):
    """The per-block task: label, reduce to partial sums, keep the boundary planes.

    ``state`` (the method's global state) travels as its own graph key, once per worker, not
    inside every task."""
    ctx = dataclasses.replace(ctx, state=state)
    spec = ctx.spec
    prob, votes, rng = block_prob(raw, mask, spec)
    fg = foreground(prob, spec.threshold)
    labels, keys = method.label_block(fg, prob, votes, ctx)
    core = ctx.core
    n = int(labels.max()) if labels.size else 0
    if keys is None:
        keys = np.uint64(ctx.offset) + np.arange(1, n + 1, dtype=np.uint64)
    cmask = None
    if spec.mask_mode == "count" and mask is not None:
        cmask = np.asarray(mask[core], dtype=bool)
    part = st.block_partials(
        labels, keys, prob[core], ctx.origin, ctx.shape,
        in_mask=cmask, votes=None if votes is None else votes[core], n_classes=max(1, len(spec.channels)),
    )
    part.update(rng)
    faces = _faces(labels, keys) if want_faces else None
    return part, faces


def relabel_block(raw: np.ndarray, mask: np.ndarray | None, method: ClusterMethod, ctx: BlockContext,
                  lut: np.ndarray, dtype: Any, state: Any = None) -> np.ndarray:
    """Second pass for the label image: label the block again and map local labels through ``lut``."""
    ctx = dataclasses.replace(ctx, state=state)
    prob, votes, _ = block_prob(raw, mask, ctx.spec)
    labels, _ = method.label_block(foreground(prob, ctx.spec.threshold), prob, votes, ctx)
    return lut.astype(dtype, copy=False)[labels]


# ----------------------------------------------------------------------------------------------
# touching planes -> label pairs
# ----------------------------------------------------------------------------------------------


def _plane_offsets(connectivity: int) -> list[tuple[int, int]]:
    if connectivity == 6:
        return [(0, 0)]
    if connectivity == 18:
        return [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    return [(du, dv) for du in (-1, 0, 1) for dv in (-1, 0, 1)]


def touching_pairs(lo: np.ndarray, hi: np.ndarray, connectivity: int) -> np.ndarray:
    """Label pairs (a from plane ``lo``, b from the next plane ``hi``) that are neighbours.

    Both planes cover the same (u, v) extent; ``lo[i, j]`` touches ``hi[i + du, j + dv]`` for the
    in-plane offsets the connectivity allows.
    """
    U, V = lo.shape
    found = []
    for du, dv in _plane_offsets(connectivity):
        i0, i1, j0, j1 = max(0, -du), U - max(0, du), max(0, -dv), V - max(0, dv)
        a = lo[i0:i1, j0:j1]
        b = hi[i0 + du: i1 + du, j0 + dv: j1 + dv]
        sel = (a != 0) & (b != 0)
        if sel.any():
            found.append(np.stack([a[sel], b[sel]], axis=1))
    if not found:
        return np.zeros((0, 2), np.uint64)
    return np.unique(np.concatenate(found), axis=0)


def _extend(plane: np.ndarray, nb_u: np.ndarray | None, nb_v: np.ndarray | None, nb_uv: np.ndarray | None) -> np.ndarray:
    """Add the first row (from the +u neighbour's plane), first column (+v) and corner (+u+v)."""
    U, V = plane.shape
    out = np.zeros((U + 1, V + 1), plane.dtype)
    out[:U, :V] = plane
    if nb_u is not None:
        out[U, :V] = nb_u[0, :V]
    if nb_v is not None:
        out[:U, V] = nb_v[:U, 0]
    if nb_uv is not None:
        out[U, V] = nb_uv[0, 0]
    return out


def face_pairs(axis: int, connectivity: int, lo_faces: list, hi_faces: list) -> np.ndarray:
    """Pairs across the boundary after block A along ``axis``.

    ``lo_faces``: faces of A, A+u, A+v, A+u+v (None where absent); ``hi_faces``: the same for the
    successor block B = A + e_axis. Only the plane dict entries are used.
    """
    lo = [None if f is None else f[(axis, 1)] for f in lo_faces]
    hi = [None if f is None else f[(axis, 0)] for f in hi_faces]
    if connectivity == 6:
        return touching_pairs(lo[0], hi[0], connectivity)
    return touching_pairs(_extend(*lo), _extend(*hi), connectivity)


# ----------------------------------------------------------------------------------------------
# the graph
# ----------------------------------------------------------------------------------------------


def block_grid(chunks: tuple[tuple[int, ...], ...]) -> tuple[list[tuple[int, int, int]], dict, dict]:
    """Block ids in C order, their (start) origins and fixed label offsets (voxels before them)."""
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in chunks]
    ids = list(itertools.product(*(range(len(c)) for c in chunks)))
    origins, offsets, total = {}, {}, 0
    for b in ids:
        origins[b] = tuple(int(starts[a][b[a]]) for a in range(3))
        offsets[b] = total
        total += int(np.prod([chunks[a][b[a]] for a in range(3)]))
    return ids, origins, offsets


def chunks_at_least(chunks: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Merge chunks along one axis until each holds at least ``size`` voxels (or the whole axis), so
    that an overlap of depth ``size`` needs no rechunking."""
    out: list[int] = []
    for c in chunks:
        if out and (out[-1] < size or c < size):
            out[-1] += c
        else:
            out.append(c)
    return tuple(out)


def with_halo(arr: da.Array, halo: int) -> da.Array:
    """``arr`` (spatial axes last) with chunks of at least ``halo``, overlapped by ``halo`` voxels
    on internal faces (none beyond the volume edge). Block ``b`` keeps the grid position ``b``."""
    lead = arr.ndim - 3
    if halo <= 0:
        return arr
    chunks = tuple(arr.chunks[:lead]) + tuple(chunks_at_least(c, halo) for c in arr.chunks[lead:])
    if chunks != arr.chunks:
        arr = arr.rechunk(chunks)
    depth = {a: (halo if a >= lead and len(arr.chunks[a]) > 1 else 0) for a in range(arr.ndim)}
    return da.overlap.overlap(arr, depth=depth, boundary="none")


def _spatial_chunks(raw: da.Array, halo: int) -> tuple[tuple[int, ...], ...]:
    return tuple(chunks_at_least(c, halo) if halo > 0 else c for c in raw.chunks[-3:])


def _block_source(arr: da.Array | None, halo: int) -> tuple[da.Array | None, Callable]:
    """The array whose block ``b`` is block ``b`` of ``arr`` plus ``halo`` voxels of context,
    and a function giving that block's graph key."""
    if arr is None:
        return None, lambda b: None
    if arr.ndim == 4 and len(arr.chunks[0]) != 1:
        arr = arr.rechunk({0: -1})
    arr = with_halo(arr, halo)
    lead = (0,) * (arr.ndim - 3)
    return arr, lambda b: (arr.name,) + lead + tuple(b)


def _core(origin, size, halo) -> tuple[slice, slice, slice]:
    return tuple(slice(o - max(0, o - halo), o - max(0, o - halo) + s) for o, s in zip(origin, size))


def build_pass(raw: da.Array, mask: da.Array | None, method: ClusterMethod, spec: BlockSpec,
               params: dict[str, Any], state: Any, voxel_size) -> tuple[list, Any, Any, dict]:
    """The labelling pass as one dask graph.

    Returns (block ids, a Delayed list of per-block partials, a Delayed list of face pair arrays,
    the per-block :class:`BlockContext`). The graph is written directly (no ``dask.delayed`` per
    block) so that building it stays fast for tens of thousands of blocks.
    """
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    halo = int(method.halo(params, voxel_size)) if method.halo else 0
    if mask is not None:
        mask = mask.rechunk(_spatial_chunks(raw, halo))
    raw_src, raw_key = _block_source(raw, halo)
    mask_src, mask_key = _block_source(mask, halo)
    chunks = _spatial_chunks(raw, halo)
    shape = tuple(int(s) for s in raw.shape[-3:])
    ids, origins, offsets = block_grid(chunks)
    token = dask.base.tokenize(raw_src.name, None if mask_src is None else mask_src.name, method.name, spec, params,
                               halo, state)
    name = f"pick-blocks-{token}"
    dsk: dict = {name + "-state": state}
    contexts = {}
    want_faces = method.merge_touching
    for b in ids:
        size = tuple(chunks[a][b[a]] for a in range(3))
        ctx = BlockContext(b, origins[b], _core(origins[b], size, halo), shape, offsets[b], spec, halo, params)
        contexts[b] = ctx
        dsk[(name,) + b] = (block_pass, raw_key(b), mask_key(b), method, ctx, want_faces, name + "-state")
        dsk[(name + "-part",) + b] = (operator.getitem, (name,) + b, 0)
        dsk[(name + "-faces",) + b] = (operator.getitem, (name,) + b, 1)
    pair_keys = []
    if want_faces:
        nblocks = tuple(len(c) for c in chunks)
        conn = spec.connectivity

        def around(c, u, v):
            out = []
            for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
                nb = list(c)
                nb[u] += du
                nb[v] += dv
                out.append((name + "-faces",) + tuple(nb) if all(nb[a] < nblocks[a] for a in range(3)) else None)
            return out

        for b in ids:
            for axis in range(3):
                if b[axis] + 1 >= nblocks[axis]:
                    continue
                succ = tuple(b[a] + (a == axis) for a in range(3))
                u, v = [a for a in range(3) if a != axis]
                key = (name + "-pairs", axis) + b
                if conn == 6:
                    dsk[key] = (face_pairs, axis, 6, [(name + "-faces",) + b], [(name + "-faces",) + succ])
                else:
                    dsk[key] = (face_pairs, axis, conn, around(b, u, v), around(succ, u, v))
                pair_keys.append(key)
    dsk[name + "-partials"] = (list, [(name + "-part",) + b for b in ids])
    dsk[name + "-allpairs"] = (list, pair_keys)
    deps = [raw_src] + ([mask_src] if mask_src is not None else [])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return ids, Delayed(name + "-partials", graph, layer=name), Delayed(name + "-allpairs", graph, layer=name), contexts


def label_image(raw: da.Array, mask: da.Array | None, method: ClusterMethod, contexts: dict, luts: dict,
                n_labels: int, state: Any = None) -> da.Array:
    """The final label image (uint32, or uint64 beyond 2**32 - 1 clusters), built block by block."""
    from dask.highlevelgraph import HighLevelGraph

    dtype = np.uint32 if n_labels < 2**32 - 1 else np.uint64
    halo = max((ctx.halo for ctx in contexts.values()), default=0)
    chunks = _spatial_chunks(raw, halo)
    if mask is not None:
        mask = mask.rechunk(chunks)
    raw_src, raw_key = _block_source(raw, halo)
    mask_src, mask_key = _block_source(mask, halo)
    name = "pick-labels-" + dask.base.tokenize(raw_src.name, None if mask_src is None else mask_src.name,
                                               method.name, list(contexts.values()), [luts[b] for b in contexts], state)
    dsk: dict = {(name,) + b: (relabel_block, raw_key(b), mask_key(b), method, ctx, luts[b], dtype, name + "-state")
                 for b, ctx in contexts.items()}
    dsk[name + "-state"] = state
    deps = [raw_src] + ([mask_src] if mask_src is not None else [])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return da.Array(graph, name, chunks=chunks, dtype=dtype)
