"""``meanshift``: mean-shift clustering (DeepFinder's way of separating touching particles), blockwise with a halo.

Pass 1 (``prepare``): every block plus a halo of two bandwidths runs a flat-kernel mean shift with
bin seeding (:func:`mean_shift`, equivalent to scikit-learn's and much faster) on the coordinates
(Angstrom) of its foreground voxels, per class with that class's
bandwidth, and keeps the modes that fall inside its core; modes closer than half a bandwidth (the
same mode seen from two blocks) are merged. Pass 2 (``label_block``): every foreground voxel joins the
nearest mode of its class within two bandwidths, which gives a global label image keyed by mode, so
the usual statistics and filters apply unchanged. Results near block faces can differ slightly from
a whole-volume mean shift (a mode depends on voxels up to about two bandwidths away).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import dask
import numpy as np
from pydantic import Field, field_serializer, field_validator

from deepict_dask.errors import InputError
from deepict_dask.pick.label import BlockContext, ClusterMethod, block_grid, with_halo
from deepict_dask.pick.methods import MethodParams, register_method
from deepict_dask.pick.threshold import foreground
from deepict_dask.units import LengthField, parse_length


class MeanShiftParams(MethodParams):
    """``bandwidth``: the kernel radius, one length or one per class (``{ribosome: 60A, '*': 80A}``;
    on the command line ``ribosome=60A``, repeated)."""

    name: Literal["meanshift"] = "meanshift"
    bandwidth: LengthField | dict[str, LengthField] = Field(
        description="kernel radius, one length or one per class (CLASS=LEN, repeated)")

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _per_class(cls, value: Any) -> Any:
        """``"ribosome=60A"`` or a list of such (the command line's spelling) -> {class: length}."""
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and any(isinstance(v, str) and "=" in v for v in items):
            table = {}
            for v in items:
                key, _, length = str(v).rpartition("=")
                table[key or "*"] = length
            return table
        if isinstance(items, (list, tuple)) and len(items) == 1:
            return items[0]
        return value

    @field_serializer("bandwidth")
    def _as_text(self, value: Any) -> str | dict[str, str]:
        return {k: str(v) for k, v in value.items()} if isinstance(value, dict) else str(value)

    @field_validator("bandwidth")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        lengths = value.values() if isinstance(value, dict) else [value]
        if not all(v.value > 0 for v in lengths):
            raise ValueError(f"must be positive, got {value}")
        return value


def bandwidths_A(params: dict[str, Any], voxel_size: Sequence[float]) -> dict[str, float]:
    """``params['bandwidth']``: a length, or {class or '*': length}, in Angstrom per class."""
    raw = params.get("bandwidth")
    if raw is None:
        raise InputError("method meanshift needs a bandwidth (e.g. 60A, or ribosome=60A)")
    table = raw if isinstance(raw, dict) else {"*": raw}
    out = {k: parse_length(v, "vx").angstrom(voxel_size) for k, v in table.items()}
    if not all(v > 0 for v in out.values()):
        raise InputError(f"mean-shift bandwidths must be positive, got {raw}")
    return out


def _class_bandwidths(params: dict[str, Any], voxel_size, n_classes: int) -> np.ndarray:
    bw = bandwidths_A(params, voxel_size)
    names = params.get("vote_names") or [params.get("unit", "*")] * n_classes
    missing = [n for n in names if n not in bw and "*" not in bw]
    if missing:
        raise InputError(f"no mean-shift bandwidth for class(es) {', '.join(missing)}")
    return np.array([bw.get(n, bw.get("*")) for n in names], dtype=np.float64)


def _halo(params: dict[str, Any], voxel_size) -> int:
    return int(math.ceil(2 * max(bandwidths_A(params, voxel_size).values()) / min(voxel_size)))


def mean_shift(points: np.ndarray, bandwidth: float, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Flat-kernel mean shift with bin seeding, vectorised (same result as scikit-learn's
    ``MeanShift(bin_seeding=True, min_bin_freq=1)`` modes, much faster: every iteration moves all
    seeds at once through one sparse seed x point neighbourhood matrix).

    Returns (modes, support = points within ``bandwidth`` of each mode), strongest first; modes
    within ``bandwidth`` of a stronger one are dropped, as scikit-learn does.
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros((0, pts.shape[1] if pts.ndim == 2 else 3)), np.zeros(0, np.int64)
    tree = cKDTree(pts)
    seeds = np.unique(np.round(pts / bandwidth), axis=0) * bandwidth
    active = np.ones(len(seeds), bool)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        m = cKDTree(seeds[idx]).sparse_distance_matrix(tree, bandwidth, output_type="coo_matrix")
        counts = np.bincount(m.row, minlength=len(idx)).astype(np.float64)
        sums = np.stack([np.bincount(m.row, weights=pts[m.col, a], minlength=len(idx)) for a in range(pts.shape[1])], 1)
        moved = counts > 0
        new = seeds[idx].copy()
        new[moved] = sums[moved] / counts[moved, None]
        shift = np.linalg.norm(new - seeds[idx], axis=1)
        seeds[idx] = new
        active[idx[(shift < 1e-3 * bandwidth) | ~moved]] = False
    support = np.array([len(x) for x in tree.query_ball_point(seeds, bandwidth)], dtype=np.int64)
    keep_seed = support > 0
    seeds, support = seeds[keep_seed], support[keep_seed]
    order = np.lexsort((seeds[:, 2], seeds[:, 1], seeds[:, 0], -support))
    seeds, support = seeds[order], support[order]
    keep = np.ones(len(seeds), bool)
    stree = cKDTree(seeds)
    for i in range(len(seeds)):
        if keep[i]:
            near = np.asarray(stree.query_ball_point(seeds[i], bandwidth))
            keep[near[near > i]] = False
    return seeds[keep], support[keep]


def _block_modes(raw: np.ndarray, mask: np.ndarray | None, ctx: BlockContext, bw: np.ndarray,
                 voxel_size: Sequence[float]) -> np.ndarray:
    """Mean-shift modes (global voxel z, y, x, class, support) owned by this block's core."""
    from deepict_dask.pick.label import block_prob

    prob, votes, _ = block_prob(raw, mask, ctx.spec)
    fg = foreground(prob, ctx.spec.threshold)
    vs = np.asarray(voxel_size, dtype=np.float64)
    lo = np.array([o - c.start for o, c in zip(ctx.origin, ctx.core)])
    out = []
    for k in range(len(bw)):
        sel = fg if votes is None else fg & (votes == k)
        pts = np.argwhere(sel)
        if len(pts) == 0:
            continue
        centres, support = mean_shift(pts * vs, float(bw[k]))
        centres = centres / vs
        r = np.rint(centres).astype(np.int64)
        core = np.all([(r[:, a] >= ctx.core[a].start) & (r[:, a] < ctx.core[a].stop) for a in range(3)], axis=0)
        for c, s in zip(centres[core] + lo, support[core]):
            out.append([c[0], c[1], c[2], k, s])
    return np.asarray(out, dtype=np.float64).reshape(-1, 5)


def _merge_close(modes: np.ndarray, bw: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Of modes of one class closer than half a bandwidth keep the best supported."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(modes), bool)
    for k in np.unique(modes[:, 3]).astype(int):
        idx = np.flatnonzero(modes[:, 3] == k)
        pairs = cKDTree(modes[idx, :3] * vs).query_pairs(bw[k] / 2, output_type="ndarray")
        for i in idx[np.argsort(-modes[idx, 4], kind="stable")]:
            if not keep[i]:
                continue
            pos = np.searchsorted(idx, i)
            nb = np.r_[pairs[pairs[:, 0] == pos, 1], pairs[pairs[:, 1] == pos, 0]]
            keep[idx[nb]] = False
            keep[i] = True
    return modes[keep]


def prepare(raw, mask, spec, params: dict[str, Any], voxel_size) -> dict[str, Any]:
    """Find all modes (pass 1); the state handed to every ``label_block``."""
    n_classes = len(spec.channels) if spec.softmax else 1
    bw = _class_bandwidths(params, voxel_size, n_classes)
    halo = _halo(params, voxel_size)
    raw_h = with_halo(raw.rechunk({0: -1}) if raw.ndim == 4 else raw, halo)
    mask_h = with_halo(mask, halo) if mask is not None else None
    chunks = raw_h.chunks[-3:]
    core_chunks = tuple(
        tuple(c - (halo if i > 0 else 0) - (halo if i < len(cs) - 1 else 0) for i, c in enumerate(cs)) for cs in chunks
    )
    ids, origins, offsets = block_grid(core_chunks)
    shape = tuple(int(s) for s in raw.shape[-3:])
    raw_d = raw_h.to_delayed().reshape(-1, *raw_h.numblocks[-3:])[0] if raw_h.ndim == 4 else raw_h.to_delayed()
    mask_d = mask_h.to_delayed() if mask_h is not None else None
    tasks = []
    for b in ids:
        size = tuple(core_chunks[a][b[a]] for a in range(3))
        core = tuple(slice(o - max(0, o - halo), o - max(0, o - halo) + s) for o, s in zip(origins[b], size))
        ctx = BlockContext(b, origins[b], core, shape, offsets[b], spec, halo, params)
        tasks.append(dask.delayed(_block_modes)(raw_d[b], None if mask_d is None else mask_d[b], ctx, bw,
                                                tuple(voxel_size)))
    modes = np.concatenate(dask.compute(*tasks)) if tasks else np.zeros((0, 5))
    modes = _merge_close(modes, bw, np.asarray(voxel_size, dtype=np.float64)) if len(modes) else modes
    return {"modes": modes, "bandwidth": bw, "voxel_size": tuple(voxel_size)}


def label_block(fg: np.ndarray, prob: np.ndarray, votes: np.ndarray | None, ctx: BlockContext):
    """Foreground voxels of the core -> nearest mode of their class (keys: mode index + 1)."""
    from scipy.spatial import cKDTree

    state = ctx.state
    modes, bw, vs = state["modes"], state["bandwidth"], np.asarray(state["voxel_size"])
    core_fg = fg[ctx.core]
    labels = np.zeros(core_fg.shape, np.uint32)
    pts = np.argwhere(core_fg)
    if len(pts) == 0 or len(modes) == 0:
        return labels, np.zeros(0, np.uint64)
    cls = np.zeros(len(pts), int) if votes is None else votes[ctx.core][core_fg]
    owner = np.full(len(pts), -1, np.int64)
    gpts = (pts + np.asarray(ctx.origin)) * vs
    for k in np.unique(cls):
        midx = np.flatnonzero(modes[:, 3] == k)
        if len(midx) == 0:
            continue
        sel = cls == k
        d, j = cKDTree(modes[midx, :3] * vs).query(gpts[sel], distance_upper_bound=2 * bw[k])
        ok = np.isfinite(d)
        owner[np.flatnonzero(sel)[ok]] = midx[j[ok]]
    used, local = np.unique(owner[owner >= 0], return_inverse=True)
    labels[tuple(pts[owner >= 0].T)] = (local + 1).astype(np.uint32)
    return labels, used.astype(np.uint64) + np.uint64(1)


register_method(ClusterMethod("meanshift", label_block, merge_touching=False, halo=None, prepare=prepare,
                              params=MeanShiftParams))
