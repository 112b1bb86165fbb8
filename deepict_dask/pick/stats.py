"""Per-cluster statistics as per-block partial sums keyed by label, merged by a group-by.

No loop runs over labels: a block is reduced with ``np.bincount`` and one stable sort +
``ufunc.reduceat`` (min/max), and the merge is the same vectorised group-by on a table with one row
per (block, cluster) piece. Memory is therefore proportional to the number of cluster pieces, never
to the volume, and 200,000 clusters cost a few tens of MB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SUM_COLUMNS = ("count", "sz", "sy", "sx", "sp", "spz", "spy", "spx", "in_mask")
MIN_COLUMNS = ("first", "zmin", "ymin", "xmin")
MAX_COLUMNS = ("pmax", "zmax", "ymax", "xmax")


def block_partials(
    labels: np.ndarray,
    keys: np.ndarray,
    prob: np.ndarray,
    origin: Sequence[int],
    shape: Sequence[int],
    *,
    in_mask: np.ndarray | None = None,
    votes: np.ndarray | None = None,
    n_classes: int = 1,
) -> dict[str, np.ndarray]:
    """Partial sums of one block; ``labels`` are compact local labels 1..n, ``keys[i]`` the global
    key of local label ``i + 1``. Coordinates are global voxel indices (z, y, x)."""
    n = len(keys)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx].astype(np.intp)
    out: dict[str, np.ndarray] = {"key": np.asarray(keys, dtype=np.uint64)}
    if n == 0:
        for c in SUM_COLUMNS + MIN_COLUMNS + MAX_COLUMNS:
            out[c] = np.zeros(0, np.float64)
        out["votes"] = np.zeros((0, n_classes), np.int64)
        return out
    bz, by, bx = labels.shape
    z, rem = np.divmod(idx, by * bx)
    y, x = np.divmod(rem, bx)
    z = z + int(origin[0])
    y = y + int(origin[1])
    x = x + int(origin[2])
    p = prob.ravel()[idx].astype(np.float64)

    def total(weights=None):
        return np.bincount(lab, weights=weights, minlength=n + 1)[1:]

    out["count"] = total().astype(np.float64)
    out["sz"], out["sy"], out["sx"] = total(z.astype(np.float64)), total(y.astype(np.float64)), total(x.astype(np.float64))
    out["sp"] = total(p)
    out["spz"], out["spy"], out["spx"] = total(p * z), total(p * y), total(p * x)
    out["in_mask"] = total(in_mask.ravel()[idx].astype(np.float64)) if in_mask is not None else np.zeros(n)
    # one stable sort groups voxels by label while keeping raster order inside each group
    order = np.argsort(lab, kind="stable")
    starts = np.concatenate([[0], np.cumsum(out["count"][:-1].astype(np.int64))])
    gz, gy, gx = z[order], y[order], x[order]
    sy_, sx_ = int(shape[1]), int(shape[2])
    out["first"] = ((gz[starts] * sy_ + gy[starts]) * sx_ + gx[starts]).astype(np.float64)
    out["zmin"], out["zmax"] = gz[starts].astype(np.float64), np.maximum.reduceat(gz, starts).astype(np.float64)
    out["ymin"], out["ymax"] = np.minimum.reduceat(gy, starts).astype(np.float64), np.maximum.reduceat(gy, starts).astype(np.float64)
    out["xmin"], out["xmax"] = np.minimum.reduceat(gx, starts).astype(np.float64), np.maximum.reduceat(gx, starts).astype(np.float64)
    out["pmax"] = np.maximum.reduceat(p[order], starts)
    if votes is not None:
        v = votes.ravel()[idx].astype(np.intp)
        out["votes"] = np.bincount(lab * n_classes + v, minlength=(n + 1) * n_classes).reshape(n + 1, n_classes)[1:]
    else:
        out["votes"] = np.zeros((n, n_classes), np.int64)
    return out


def _union_find(keys: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Group id for every (unique, sorted) key: keys joined transitively by ``pairs`` share one id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    group = np.arange(len(keys), dtype=np.int64)
    if len(pairs) == 0:
        return group
    a = np.searchsorted(keys, pairs[:, 0])
    b = np.searchsorted(keys, pairs[:, 1])
    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    graph = coo_matrix((np.ones(len(ia), np.int8), (ia, ib)), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(graph, directed=False)
    group[nodes] = len(keys) + comp
    return group


def merge_partials(partials: Sequence[dict], pairs: Sequence[np.ndarray]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Merge block partials into one row per cluster, numbered 1..N in raster order of first voxel.

    Returns the cluster table (``label, count, z, y, x`` unweighted centroid, ``wz, wy, wx``
    probability-weighted centroid, ``mean_prob, max_prob, in_mask, zmin..xmax, votes_<i>``) and, for
    every partial, the final label of each of its pieces (its lookup table without the 0 entry).
    """
    sizes = [len(p["key"]) for p in partials]
    keys = np.concatenate([p["key"] for p in partials]) if partials else np.zeros(0, np.uint64)
    allpairs = np.concatenate([np.asarray(p, np.uint64).reshape(-1, 2) for p in pairs]) if pairs else np.zeros((0, 2), np.uint64)
    n_classes = partials[0]["votes"].shape[1] if partials else 1
    if len(keys) == 0:
        return _table({c: np.zeros(0) for c in SUM_COLUMNS + MIN_COLUMNS + MAX_COLUMNS}, np.zeros((0, n_classes))), [
            np.zeros(0, np.int64) for _ in partials
        ]
    # pieces sharing a key (one cluster seen by several blocks, e.g. a mean-shift centre) are one
    ukeys, kinv = np.unique(keys, return_inverse=True)
    _, inv = np.unique(_union_find(ukeys, allpairs)[kinv], return_inverse=True)
    n = int(inv.max()) + 1
    cols: dict[str, np.ndarray] = {}
    for c in SUM_COLUMNS:
        cols[c] = np.bincount(inv, weights=np.concatenate([p[c] for p in partials]), minlength=n)
    for c in MIN_COLUMNS:
        v = np.full(n, np.inf)
        np.minimum.at(v, inv, np.concatenate([p[c] for p in partials]))
        cols[c] = v
    for c in MAX_COLUMNS:
        v = np.full(n, -np.inf)
        np.maximum.at(v, inv, np.concatenate([p[c] for p in partials]))
        cols[c] = v
    votes = np.zeros((n, n_classes), np.int64)
    np.add.at(votes, inv, np.concatenate([p["votes"] for p in partials]))
    # raster order of the first voxel = scipy.ndimage.label's numbering
    order = np.argsort(cols["first"], kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(1, n + 1)
    table = _table({c: v[order] for c, v in cols.items()}, votes[order])
    final = rank[inv]
    luts = np.split(final, np.cumsum(sizes)[:-1])
    return table, luts


def _table(cols: dict[str, np.ndarray], votes: np.ndarray) -> pd.DataFrame:
    count = cols["count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        df = pd.DataFrame(
            {
                "label": np.arange(1, len(count) + 1, dtype=np.int64),
                "size": count.astype(np.int64),
                "z": cols["sz"] / count,
                "y": cols["sy"] / count,
                "x": cols["sx"] / count,
                "wz": cols["spz"] / cols["sp"],
                "wy": cols["spy"] / cols["sp"],
                "wx": cols["spx"] / cols["sp"],
                "mean_prob": cols["sp"] / count,
                "max_prob": cols["pmax"],
                "in_mask": cols["in_mask"].astype(np.int64),
                "zmin": cols["zmin"].astype(np.int64),
                "ymin": cols["ymin"].astype(np.int64),
                "xmin": cols["xmin"].astype(np.int64),
                "zmax": cols["zmax"].astype(np.int64),
                "ymax": cols["ymax"].astype(np.int64),
                "xmax": cols["xmax"].astype(np.int64),
            }
        )
    for i in range(votes.shape[1]):
        df[f"votes_{i}"] = votes[:, i]
    return df
