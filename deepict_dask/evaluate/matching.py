"""Matching predicted particle positions to true ones within a tolerance radius.

Two protocols:

* :func:`match_optimal` — a one-to-one assignment that first maximises the number of matched pairs
  and then minimises their summed distance. Candidate pairs come from a KD-tree (only pairs within
  the radius exist), the bipartite candidate graph is split into connected components, components
  with a single prediction or a single truth (stars: the shortest edge wins) are solved at once with
  array operations, and each remaining component is solved exactly
  (``scipy.optimize.linear_sum_assignment`` on the small dense block, or the sparse LAPJV solver
  ``min_weight_full_bipartite_matching`` for very large components). 100,000 vs 100,000 points take
  about a second.
* :func:`match_greedy` — DeePiCt's protocol: predictions visited in the given (score) order, each
  takes the nearest not-yet-detected truth within the radius (TP); if every truth within the radius
  is already detected it is *redundant* (neither TP nor FP); with no truth within the radius it is a
  FP.

Points of different groups (tomogram, class) never match: callers pass an integer ``groups`` array
and the group id is added as a fourth, widely spaced coordinate, so one KD-tree serves all groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

#: Components with more candidate cells than this use the sparse solver instead of a dense block.
DENSE_LIMIT = 4_000_000

TP, FP, REDUNDANT = 1, 0, 2


@dataclass
class Pairs:
    """Candidate pairs (prediction index, truth index, distance) within the tolerance."""

    pred: np.ndarray
    truth: np.ndarray
    dist: np.ndarray


@dataclass
class Matching:
    """A one-to-one matching: per prediction the matched truth index (-1: none) and distance."""

    pred_to_truth: np.ndarray
    truth_to_pred: np.ndarray
    pred_dist: np.ndarray
    #: number of predictions within the tolerance of each truth particle
    truth_hits: np.ndarray


def _with_groups(xyz: np.ndarray, groups: np.ndarray | None, spacing: float) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if groups is None:
        return xyz
    g = np.asarray(groups, dtype=np.float64).reshape(-1, 1) * spacing
    return np.hstack([xyz, g])


def candidate_pairs(
    pred: np.ndarray,
    truth: np.ndarray,
    tolerance: float,
    pred_groups: np.ndarray | None = None,
    truth_groups: np.ndarray | None = None,
) -> Pairs:
    """All (prediction, truth) pairs of the same group at Euclidean distance <= ``tolerance``."""
    if not np.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(f"tolerance must be a positive number, got {tolerance}")
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 3)
    if len(pred) == 0 or len(truth) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy(), np.zeros(0))
    spacing = 4.0 * tolerance + 1.0
    a = _with_groups(pred, pred_groups, spacing)
    b = _with_groups(truth, truth_groups, spacing)
    found = cKDTree(a).sparse_distance_matrix(cKDTree(b), tolerance * (1 + 1e-9) + 1e-12, output_type="ndarray")
    pi = found["i"].astype(np.int64)
    ti = found["j"].astype(np.int64)
    if pred_groups is not None:
        same = np.asarray(pred_groups)[pi] == np.asarray(truth_groups)[ti]
        pi, ti = pi[same], ti[same]
    # exact distances with one formula so that ties and the radius boundary are decided consistently
    d = np.sqrt(((pred[pi] - truth[ti]) ** 2).sum(axis=1))
    keep = d <= tolerance
    return Pairs(pi[keep], ti[keep], d[keep])


def _solve_dense(n_p: int, n_t: int, p: np.ndarray, t: np.ndarray, d: np.ndarray, tol: float):
    """Max-cardinality, then min-distance matching of one small component (local indices)."""
    big = tol * (min(n_p, n_t) + 1) + 1.0
    cost = np.zeros((n_p, n_t))
    cost[p, t] = d - big
    dist = np.full((n_p, n_t), np.nan)
    dist[p, t] = d
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < 0
    return rows[ok], cols[ok], dist[rows[ok], cols[ok]]


def _solve_sparse(n_p: int, n_t: int, p: np.ndarray, t: np.ndarray, d: np.ndarray, tol: float):
    """The same problem with the sparse LAPJV solver, made always feasible with private dummies.

    Rows are predictions then one dummy per truth; columns are truths then one dummy per prediction.
    Real edges cost ``d + 1``; "prediction i unmatched" and "truth j unmatched" cost ``big`` each; a
    transposed copy of the real edges between dummies costs ``1`` so that matched pairs free their
    dummies. Every extra matched pair saves ``2 big - d - 2 > 0``, and ``big`` exceeds any possible
    sum of distances, so cardinality comes first. All weights are positive (explicit zeros would be
    read as missing edges).
    """
    big = (tol + 2.0) * (min(n_p, n_t) + 1) + 1.0
    ip = np.arange(n_p)
    it = np.arange(n_t)
    rows = np.concatenate([p, ip, n_p + it, n_p + t])
    cols = np.concatenate([t, n_t + ip, it, n_t + p])
    w = np.concatenate([d + 1.0, np.full(n_p, big), np.full(n_t, big), np.ones(len(p))])
    size = n_p + n_t
    graph = csr_matrix((w, (rows, cols)), shape=(size, size))
    r, c = min_weight_full_bipartite_matching(graph)
    ok = (r < n_p) & (c < n_t)
    r, c = r[ok], c[ok]
    lookup = csr_matrix((d + 1.0, (p, t)), shape=(n_p, n_t))
    return r, c, np.asarray(lookup[r, c]).ravel() - 1.0


def _local_index(comp: np.ndarray, node: np.ndarray, n_nodes: int):
    """Per edge, the rank of its node among the distinct nodes of its component.

    Returns (distinct nodes sorted by component then id, local rank per edge, start offset of each
    component in the distinct-node array, indexed by component id).
    """
    key = comp.astype(np.int64) * n_nodes + node
    uniq, inv = np.unique(key, return_inverse=True)
    ucomp = uniq // n_nodes
    start = np.searchsorted(ucomp, np.arange(int(comp.max()) + 2))
    return uniq % n_nodes, inv - start[comp], start


def match_optimal(
    pred: np.ndarray,
    truth: np.ndarray,
    tolerance: float,
    pred_groups: np.ndarray | None = None,
    truth_groups: np.ndarray | None = None,
    *,
    pairs: Pairs | None = None,
    dense_limit: int = DENSE_LIMIT,
) -> Matching:
    """One-to-one matching maximising matched pairs, then minimising their summed distance."""
    n_p = len(np.asarray(pred).reshape(-1, 3))
    n_t = len(np.asarray(truth).reshape(-1, 3))
    if pairs is None:
        pairs = candidate_pairs(pred, truth, tolerance, pred_groups, truth_groups)
    p2t = np.full(n_p, -1, dtype=np.int64)
    t2p = np.full(n_t, -1, dtype=np.int64)
    pdist = np.full(n_p, np.nan)
    hits = np.bincount(pairs.truth, minlength=n_t)
    if len(pairs.pred) == 0:
        return Matching(p2t, t2p, pdist, hits)

    # components of the bipartite candidate graph (prediction nodes 0..n_p-1, truth nodes n_p..)
    graph = coo_matrix((np.ones(len(pairs.pred)), (pairs.pred, n_p + pairs.truth)), shape=(n_p + n_t,) * 2)
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[pairs.pred]
    node_p = np.bincount(comp[np.unique(pairs.pred)], minlength=comp.max() + 1)
    node_t = np.bincount(comp[n_p + np.unique(pairs.truth)], minlength=comp.max() + 1)
    # a component with one prediction (or one truth) is a star: its shortest edge is the optimum
    star = (node_p[edge_comp] == 1) | (node_t[edge_comp] == 1)
    se = np.flatnonzero(star)
    se = se[np.lexsort((pairs.truth[se], pairs.pred[se], pairs.dist[se], edge_comp[se]))]
    first = se[np.concatenate([[True], np.diff(edge_comp[se]) != 0])] if len(se) else se
    p2t[pairs.pred[first]] = pairs.truth[first]
    t2p[pairs.truth[first]] = pairs.pred[first]
    pdist[pairs.pred[first]] = pairs.dist[first]

    rest = np.flatnonzero(~star)
    if len(rest):
        rest = rest[np.argsort(edge_comp[rest], kind="stable")]
        rc = edge_comp[rest]
        # local (within-component) indices of predictions and truths, for all components at once
        gp_all, lp_all, p_start = _local_index(rc, pairs.pred[rest], n_p)
        gt_all, lt_all, t_start = _local_index(rc, pairs.truth[rest], n_t)
        # 2 x 2 components (the commonest after stars) always admit two pairs: pick the cheaper pairing
        two = (node_p[rc] == 2) & (node_t[rc] == 2)
        if two.any():
            comps, slot = np.unique(rc[two], return_inverse=True)
            dm = np.full((len(comps), 2, 2), np.inf)
            dm[slot, lp_all[two], lt_all[two]] = pairs.dist[rest[two]]
            straight = dm[:, 0, 0] + dm[:, 1, 1]
            crossed = dm[:, 0, 1] + dm[:, 1, 0]
            cross = crossed < straight
            gp = gp_all[p_start[comps][:, None] + np.arange(2)]
            gt = gt_all[t_start[comps][:, None] + np.arange(2)]
            for i in (0, 1):
                j = np.where(cross, 1 - i, i)
                p2t[gp[:, i]] = gt[np.arange(len(comps)), j]
                t2p[gt[np.arange(len(comps)), j]] = gp[:, i]
                pdist[gp[:, i]] = dm[np.arange(len(comps)), i, j]
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(rc)) + 1, [len(rest)]])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            k = rc[a]
            if node_p[k] == 2 and node_t[k] == 2:
                continue
            gp = gp_all[p_start[k] : p_start[k + 1]]
            gt = gt_all[t_start[k] : t_start[k + 1]]
            solver = _solve_dense if len(gp) * len(gt) <= dense_limit else _solve_sparse
            r, c, d = solver(len(gp), len(gt), lp_all[a:b], lt_all[a:b], pairs.dist[rest[a:b]], tolerance)
            p2t[gp[r]] = gt[c]
            t2p[gt[c]] = gp[r]
            pdist[gp[r]] = d
    return Matching(p2t, t2p, pdist, hits)


@dataclass
class GreedyResult:
    """DeePiCt protocol outcome, in the original prediction order."""

    status: np.ndarray  # TP (1), FP (0) or REDUNDANT (2) per prediction
    pred_to_truth: np.ndarray  # matched truth index for TPs, -1 otherwise
    pred_dist: np.ndarray  # distance to the matched truth for TPs, NaN otherwise
    truth_hits: np.ndarray


def match_greedy(
    pred: np.ndarray,
    truth: np.ndarray,
    tolerance: float,
    order: np.ndarray,
    pred_groups: np.ndarray | None = None,
    truth_groups: np.ndarray | None = None,
) -> GreedyResult:
    """DeePiCt's greedy protocol: visit predictions in ``order``; nearest undetected truth wins.

    Ties in distance go to the truth that comes first in the truth table.
    """
    n_p = len(np.asarray(pred).reshape(-1, 3))
    n_t = len(np.asarray(truth).reshape(-1, 3))
    pairs = candidate_pairs(pred, truth, tolerance, pred_groups, truth_groups)
    status = np.full(n_p, FP, dtype=np.int8)
    p2t = np.full(n_p, -1, dtype=np.int64)
    pdist = np.full(n_p, np.nan)
    hits = np.bincount(pairs.truth, minlength=n_t)
    if len(pairs.pred):
        srt = np.lexsort((pairs.truth, pairs.dist, pairs.pred))
        cp, ct, cd = pairs.pred[srt], pairs.truth[srt], pairs.dist[srt]
        start = np.searchsorted(cp, np.arange(n_p), side="left")
        stop = np.searchsorted(cp, np.arange(n_p), side="right")
        detected = np.zeros(n_t, dtype=bool)
        ct_list = ct.tolist()
        for i in np.asarray(order, dtype=np.int64).tolist():
            a, b = int(start[i]), int(stop[i])
            if a == b:
                continue
            status[i] = REDUNDANT
            for k in range(a, b):
                j = ct_list[k]
                if not detected[j]:
                    detected[j] = True
                    status[i] = TP
                    p2t[i] = j
                    pdist[i] = cd[k]
                    break
    return GreedyResult(status, p2t, pdist, hits)
