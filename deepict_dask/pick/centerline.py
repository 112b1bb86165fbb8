"""Filaments and membranes: points along each cluster's centreline, at a fixed spacing in Angstrom.

Each kept cluster is cut out by its bounding box (the crops of all clusters are computed in one dask
call), skeletonised with ``kimimaro`` (TEASAR, anisotropic voxels, skeleton in Angstrom), split into
unbranched chains at branch points (spurs shorter than the spacing dropped), and every path is resampled by arc length every ``spacing`` Angstrom. Each point
carries the local unit direction (central difference along the path, z, y, x components), the
filament (cluster label), path number and arc position, which is what subtomogram averaging of
filaments needs to seed particles and their in-plane angle.

Crops mean a cluster must fit in memory; a single structure spanning a whole 4K tomogram is
processed as one crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import pandas as pd

from deepict_dask.io.tables import empty_table, make_table

CENTERLINE_COLUMNS = ["score", "size", "label", "path", "arc_A", "dir_z", "dir_y", "dir_x"]


def sample_path(points_A: np.ndarray, spacing_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample an ordered polyline (Angstrom) every ``spacing_A`` from its start.

    Returns (positions, unit directions, arc lengths). A path shorter than the spacing yields its
    midpoint."""
    pts = np.asarray(points_A, dtype=np.float64)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    length = arc[-1]
    s = np.arange(0.0, length + 1e-9, spacing_A) if length >= spacing_A else np.array([length / 2])
    pos = np.stack([np.interp(s, arc, pts[:, a]) for a in range(3)], axis=1)
    h = max(spacing_A / 2, 1e-6)
    ahead = np.stack([np.interp(np.minimum(s + h, length), arc, pts[:, a]) for a in range(3)], axis=1)
    behind = np.stack([np.interp(np.maximum(s - h, 0), arc, pts[:, a]) for a in range(3)], axis=1)
    d = ahead - behind
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    d = np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)
    return pos, d, s


def _chains(nbrs: list[set[int]], alive: np.ndarray) -> list[list[int]]:
    """Unbranched vertex chains of the graph (split at ends and branch points; loops included)."""
    deg = np.array([len(x) for x in nbrs])
    seen: set[tuple[int, int]] = set()
    chains = []
    ends = [i for i in np.flatnonzero(alive) if deg[i] != 2]
    loop_starts = [i for i in np.flatnonzero(alive) if deg[i] == 2]
    for s in ends + loop_starts:
        for nb in sorted(nbrs[s]):
            if (min(s, nb), max(s, nb)) in seen:
                continue
            chain, prev, cur = [s], s, nb
            seen.add((min(s, nb), max(s, nb)))
            while True:
                chain.append(cur)
                if deg[cur] != 2 or cur == s:
                    break
                nxt = next(v for v in nbrs[cur] if v != prev)
                if (min(cur, nxt), max(cur, nxt)) in seen:
                    break
                seen.add((min(cur, nxt), max(cur, nxt)))
                prev, cur = cur, nxt
            chains.append(chain)
    return chains


def skeleton_segments(vertices: np.ndarray, edges: np.ndarray, min_spur_A: float = 0.0) -> list[np.ndarray]:
    """Split a skeleton graph into unbranched vertex chains, after pruning spurs.

    Spurs (chains from a branch point to a free end shorter than ``min_spur_A``, left by surface
    bumps) are removed repeatedly, so a bumpy tube gives one chain instead of many pieces."""
    n = len(vertices)
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for a, b in edges:
        if a != b:
            nbrs[a].add(int(b))
            nbrs[b].add(int(a))
    alive = np.ones(n, bool)

    def length(chain):
        return float(np.sum(np.linalg.norm(np.diff(vertices[chain], axis=0), axis=1)))

    while True:
        chains = _chains(nbrs, alive)
        if len(chains) <= 1:
            break
        deg = [len(x) for x in nbrs]
        spurs = [c for c in chains if {deg[c[0]], deg[c[-1]]} >= {1} and max(deg[c[0]], deg[c[-1]]) > 2
                 and length(c) < min_spur_A]
        if not spurs:
            break
        for c in spurs:
            tip = c if deg[c[0]] == 1 else c[::-1]
            for v in tip[:-1]:
                for w in nbrs[v]:
                    nbrs[w].discard(v)
                nbrs[v] = set()
                alive[v] = False
    return [vertices[c] for c in _chains(nbrs, alive) if len(c) >= 2]


def _skeleton_paths(mask: np.ndarray, voxel_size: Sequence[float], spacing_A: float) -> list[np.ndarray]:
    import kimimaro

    skels = kimimaro.skeletonize(
        mask.astype(np.uint32), anisotropy=tuple(float(v) for v in voxel_size), dust_threshold=0, progress=False,
        fix_branching=True, teasar_params={"scale": 1.5, "const": float(spacing_A)},
    )
    if not skels:
        return []
    skel = next(iter(skels.values()))
    return [smooth_chain(c) for c in skeleton_segments(skel.vertices, skel.edges, spacing_A)]


def smooth_chain(points: np.ndarray, window: int = 5) -> np.ndarray:
    """Moving average along a chain (ends kept) to remove the voxel staircase before arc sampling."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) <= 2 or window < 2:
        return pts
    w = min(window, len(pts) - (1 - len(pts) % 2))
    half = w // 2
    padded = np.concatenate([np.repeat(pts[:1], half, 0), pts, np.repeat(pts[-1:], half, 0)])
    kernel = np.ones(w) / w
    out = np.stack([np.convolve(padded[:, a], kernel, mode="valid") for a in range(3)], axis=1)[: len(pts)]
    out[0], out[-1] = pts[0], pts[-1]
    return out


def centerline_table(labels: da.Array, clusters: pd.DataFrame, *, voxel_size: Sequence[float],
                     origin: Sequence[float], spacing_A: float, tomo: str) -> pd.DataFrame:
    """One row per centreline sample of every cluster in ``clusters`` (needs ``label``, bounding box,
    ``class``, ``mean_prob``, ``size``); ``labels`` is the label image holding those labels."""
    if clusters.empty:
        return empty_table(CENTERLINE_COLUMNS)
    vs = np.asarray(voxel_size, dtype=np.float64)
    crops = [labels[r.zmin: r.zmax + 1, r.ymin: r.ymax + 1, r.xmin: r.xmax + 1] for r in clusters.itertuples()]
    crops = dask.compute(*crops)
    rows = []
    for r, cls, crop in zip(clusters.itertuples(), clusters["class"].to_numpy(), crops):
        corner = np.array([r.zmin, r.ymin, r.xmin], dtype=np.float64)
        for k, path in enumerate(_skeleton_paths(crop == r.label, vs, spacing_A)):
            pos, d, s = sample_path(path, spacing_A)
            zyx = pos / vs + corner
            rows.append(pd.DataFrame({"z": zyx[:, 0], "y": zyx[:, 1], "x": zyx[:, 2], "cls": cls,
                                      "score": r.mean_prob, "size": float(r.size), "label": int(r.label), "path": k,
                                      "arc_A": s, "dir_z": d[:, 0], "dir_y": d[:, 1], "dir_x": d[:, 2]}))
    if not rows:
        return empty_table(CENTERLINE_COLUMNS)
    df = pd.concat(rows, ignore_index=True)
    cols = {c: df[c].to_numpy() for c in CENTERLINE_COLUMNS}
    return make_table(tomo, df["cls"].tolist(), zyx=df[["z", "y", "x"]].to_numpy(), voxel_size=tuple(vs),
                      origin=origin, **cols)
