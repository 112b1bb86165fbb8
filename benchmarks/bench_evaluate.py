"""Evaluation speed: particle matching at 100,000 vs 100,000 points, and histogram AUPRC.

Figures (one run, same inputs for project and baseline):

* ``match_100k_s``: optimal one-to-one matching of 100,000 predictions to 100,000 true positions
  (tolerance 10 voxels, tomogram-like density) with :func:`match_optimal`; target: a few seconds.
* ``evaluate_100k_s``: the whole :func:`evaluate_picks` (matching, per-class and per-tomogram counts,
  score curve) on the same points; ``deepict_100k_s``: DeePiCt's greedy protocol on them.
* ``match_speedup_ratio``: a naive dense baseline (full distance matrix + ``linear_sum_assignment``)
  over the project's matcher on a subset small enough for the baseline (3,000 points; quick: 800),
  with ``match_same_tp`` checking both find the same number of matches.
* ``auprc_speedup_ratio``: scikit-learn ``average_precision_score`` over the chunked histogram
  AUPRC on the same uint8 probability map (128^3; quick 64^3); ``auprc_abs_diff`` their difference.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _points(n: int, rng: np.random.Generator, density: float = 3.3e-4):
    """Truth uniform in a slab-shaped tomogram; 90 % recovered with 2-voxel noise, 10 % false picks."""
    side = (n / density / 0.3) ** (1 / 3)
    box = np.array([side, side, 0.3 * side])
    truth = rng.uniform(0, 1, size=(n, 3)) * box
    found = truth[: int(0.9 * n)] + rng.normal(0, 2.0, size=(int(0.9 * n), 3))
    false = rng.uniform(0, 1, size=(n - len(found), 3)) * box
    return np.vstack([found, false]), truth


def _timed(fn, *args, **kwargs):
    """(result, wall seconds); CPU seconds of the last call are kept in ``_timed.cpu``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    _timed.cpu = time.process_time() - c0
    return out, time.perf_counter() - t0


def run(quick: bool = False) -> dict:
    import dask
    import pandas as pd
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    from sklearn.metrics import average_precision_score

    from deepict_dask.evaluate.matching import match_optimal
    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.evaluate.segmentation import probability_metrics
    from deepict_dask.io.volume import make_volume

    rng = np.random.default_rng(0)
    tol = 10.0
    n_big = 20_000 if quick else 100_000
    pred, truth = _points(n_big, rng)
    m, t_match = _timed(match_optimal, pred, truth, tol)
    cpu_match = _timed.cpu
    scores = rng.uniform(size=len(pred))

    def table(xyz, **cols):
        df = pd.DataFrame({"tomo": "t", "class": "ribo", "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
        for a in "xyz":
            df[f"{a}_A"] = df[a] * 10.0
        return df.assign(**cols)

    pt, tt = table(pred, score=scores), table(truth)
    ev, t_eval = _timed(evaluate_picks, pt, tt, tol)
    evd, t_deepict = _timed(evaluate_picks, pt, tt, tol, protocol="deepict")

    n_small = 800 if quick else 3000
    sp, st = _points(n_small, rng)
    ours, t_ours = _timed(match_optimal, sp, st, tol)

    def dense(a, b):
        d = cdist(a, b)
        big = tol * (min(d.shape) + 1) + 1
        cost = np.where(d <= tol, d - big, 0.0)
        r, c = linear_sum_assignment(cost)
        return int((cost[r, c] < 0).sum())

    tp_dense, t_dense = _timed(dense, sp, st)

    side = 64 if quick else 128
    labels = np.zeros((side,) * 3, np.uint8)
    zz, yy, xx = np.indices(labels.shape, sparse=True)
    for c in rng.uniform(8, side - 8, size=(side // 4, 3)):
        labels[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 25] = 1
    prob = np.clip(labels * 0.4 + rng.uniform(0, 0.6, size=labels.shape), 0, 1)
    prob8 = np.round(prob * 255).astype(np.uint8)
    with dask.config.set(scheduler="threads"):
        pm, t_hist = _timed(probability_metrics, make_volume(prob8, chunks=64), make_volume(labels, chunks=64))
    ap, t_sk = _timed(average_precision_score, labels.ravel(), prob8.ravel() / 255.0)

    return {
        "n_points": n_big,
        "match_100k_s" if not quick else "match_20k_s": t_match,
        "match_cpu_s": cpu_match,
        "evaluate_100k_s" if not quick else "evaluate_20k_s": t_eval,
        "deepict_100k_s" if not quick else "deepict_20k_s": t_deepict,
        "tp": int((m.pred_to_truth >= 0).sum()),
        "f1": ev.metrics["f1"],
        "deepict_max_f1": evd.metrics["max_f1"],
        "subset_points": n_small,
        "dense_baseline_s": t_dense,
        "project_subset_s": t_ours,
        "match_speedup_ratio": t_dense / t_ours,
        "match_same_tp": tp_dense == int((ours.pred_to_truth >= 0).sum()),
        "auprc_voxels": int(labels.size),
        "auprc_hist_s": t_hist,
        "auprc_sklearn_s": t_sk,
        "auprc_speedup_ratio": t_sk / t_hist,
        "auprc_abs_diff": abs(ap - pm["auprc"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-size inputs")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
