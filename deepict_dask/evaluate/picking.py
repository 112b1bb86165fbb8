"""Particle-picking metrics: predicted positions against true positions, per class and tomogram.

Protocols
---------
``optimal`` (default)
    One-to-one optimal assignment within the tolerance (see :func:`matching.match_optimal`), done
    separately for every (tomogram, class). Every prediction not matched is a false positive, so
    ``precision = TP / RR``. SHREC-style counts are reported alongside: RR (results reported), TP,
    FP, FN, MH (truth particles with more than one prediction within the tolerance) and AD (mean
    distance of the matched pairs, in the evaluation unit). When predictions carry a ``score`` a
    precision/recall curve over score thresholds is added (re-matched at each threshold).
``deepict``
    DeePiCt's published protocol (see :func:`matching.match_greedy`): predictions are visited in
    descending score order, redundant predictions are neither TP nor FP, and the curve has one point
    per prediction; ``max_f1`` and ``auprc`` (trapezoidal, over recall) follow the reference.

Conventions for empty sets: precision is 0 without predictions, recall is 0 without truth, F1 is
``2 TP / (2 TP + FP + FN)`` and 0 when that is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.evaluate.matching import (
    REDUNDANT,
    TP,
    candidate_pairs,
    match_greedy,
    match_optimal,
)

UNITS = {"vox": "vox", "voxel": "vox", "voxels": "vox", "px": "vox", "a": "A", "A": "A", "angstrom": "A", "Å": "A"}
PROTOCOLS = ("optimal", "deepict")
TOMOGRAM_POLICIES = ("truth", "common", "strict")
COUNT_KEYS = ("rr", "tp", "fp", "fn", "n_truth", "mh", "ad", "precision", "recall", "f1", "miss_rate")


def check_unit(unit: str) -> str:
    """Normalise a unit name to ``"vox"`` or ``"A"``; anything else is a :class:`ConfigError`."""
    found = UNITS.get(str(unit)) or UNITS.get(str(unit).lower())
    if found is None:
        raise ConfigError(f"unknown unit {unit!r}; use 'vox' (voxels) or 'A' (Angstrom)")
    return found


def coordinates(df: pd.DataFrame, unit: str, path: Any = None) -> np.ndarray:
    """The (N, 3) x, y, z positions of a table in ``unit`` (voxels or Angstrom)."""
    cols = ["x", "y", "z"] if check_unit(unit) == "vox" else ["x_A", "y_A", "z_A"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        what = "voxels" if cols[0] == "x" else "Angstrom"
        raise InputError(f"table has no coordinates in {what} (missing column(s) {missing}; found {list(df.columns)})", path)
    xyz = df[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.all(np.isfinite(xyz)):
        raise InputError("table has NaN or infinite coordinates", path)
    return xyz


def ratios(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 and miss rate from counts (0 where undefined)."""
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "miss_rate": fn / (tp + fn) if tp + fn else 0.0,
    }


def curve_summary(status_in_order: np.ndarray, n_truth: int, scores_in_order: np.ndarray | None) -> dict[str, Any]:
    """DeePiCt's PR curve over the score ranking: one point per prediction, max F1 and trapezoid AUC."""
    is_tp = status_in_order == TP
    is_fp = (status_in_order != TP) & (status_in_order != REDUNDANT)
    tp = np.cumsum(is_tp)
    fp = np.cumsum(is_fp)
    valid = (tp + fp) > 0
    tp, fp = tp[valid], fp[valid]
    if len(tp) == 0 or n_truth == 0:
        return {"max_f1": 0.0, "auprc": 0.0, "best_score": None, "best_rank": None}
    precision = tp / (tp + fp)
    recall = tp / n_truth
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    auc = float(np.sum(0.5 * np.diff(recall) * (precision[1:] + precision[:-1])))
    ranks = np.flatnonzero(valid)
    best_score = None
    if scores_in_order is not None:
        best_score = float(scores_in_order[ranks[best]])
    return {"max_f1": float(f1[best]), "auprc": auc, "best_score": best_score, "best_rank": int(ranks[best]) + 1}


@dataclass
class PickEvaluation:
    """The metrics (JSON-ready) and both tables annotated with the outcome of every row.

    ``pred`` gains ``status`` (TP / FP / redundant), ``match`` (row of the matched truth, -1) and
    ``distance``; ``truth`` gains ``status`` (TP / FN), ``match`` and ``hits`` (predictions within
    the tolerance).
    """

    metrics: dict[str, Any]
    pred: pd.DataFrame
    truth: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _tomogram_check(pred: pd.DataFrame, truth: pd.DataFrame, policy: str) -> tuple[list[str], list[str]]:
    """Apply the tomogram-name policy; return (evaluated tomograms, notes)."""
    if policy not in TOMOGRAM_POLICIES:
        raise ConfigError(f"unknown tomogram policy {policy!r}; choose one of {list(TOMOGRAM_POLICIES)}")
    p = sorted(set(pred["tomo"]))
    t = sorted(set(truth["tomo"]))
    only_p = [n for n in p if n not in set(t)]
    only_t = [n for n in t if n not in set(p)]
    common = [n for n in t if n in set(p)]
    notes: list[str] = []
    if len(pred) and not common:
        raise InputError(
            "no tomogram name occurs in both tables: predictions have "
            f"{_names(p)}, truth has {_names(t)} (names must match exactly, e.g. 'TS_01' vs 'TS_01.mrc')"
        )
    if policy == "strict" and (only_p or only_t):
        raise InputError(
            f"tomogram names do not match: only in predictions {_names(only_p)}, only in truth {_names(only_t)}"
        )
    if policy == "truth" and only_p:
        raise InputError(
            f"predictions for tomograms that have no truth: {_names(only_p)} (truth has {_names(t)}); "
            "use tomograms='common' (--tomograms common) to evaluate only the tomograms present in both"
        )
    if policy == "common":
        if only_p or only_t:
            notes.append(f"ignored tomograms only in predictions {_names(only_p)}, only in truth {_names(only_t)}")
        return common, notes
    if only_t:
        notes.append(f"no predictions for {_names(only_t)}: all their particles count as false negatives")
    return t, notes


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _class_mode(pred: pd.DataFrame, truth: pd.DataFrame, by_class: bool | None) -> bool:
    pc = set(pred["class"]) if "class" in pred.columns else set()
    tc = set(truth["class"]) if "class" in truth.columns else set()
    if by_class is None:
        by_class = bool(pc) and bool(tc) and bool(pc & tc)
        if not by_class and len(pred) and len(tc) > 1 and pc:
            raise InputError(
                f"no predicted class occurs in the truth (predictions: {sorted(pc)}, truth: {sorted(tc)}); "
                "choose the classes to compare with pred_class and truth_class (--pred-class, --truth-class)"
            )
    return by_class


def evaluate_picks(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    tolerance: float,
    *,
    unit: str = "vox",
    protocol: str = "optimal",
    tomograms: str = "truth",
    by_class: bool | None = None,
    pred_class: str | None = None,
    truth_class: str | None = None,
    curve_points: int = 10,
    pred_path: Any = None,
    truth_path: Any = None,
) -> PickEvaluation:
    """Evaluate a predicted particle table against a true one.

    ``tolerance`` is a radius in ``unit`` ("vox" or "A"). ``tomograms``: "truth" evaluates every
    truth tomogram (missing predictions are FNs; predictions for unknown tomograms are an error),
    "common" only tomograms in both tables, "strict" requires the same names. ``by_class`` matches
    only within a class (default: when both tables have classes in common). ``pred_class`` /
    ``truth_class`` select one class on each side (then compared regardless of name).

    Parameters
    ----------
    pred, truth : DataFrame
        The predicted and the true positions (project table schema: ``tomo``, ``class``, x/y/z in
        voxels, x_A/y_A/z_A in Angstrom; ``pred`` may carry a ``score``).
    tolerance : float
        The matching radius, in ``unit``; positive.
    unit : str
        ``"vox"`` (compare x/y/z) or ``"A"`` (compare x_A/y_A/z_A); aliases as in :data:`UNITS`.
    protocol : str
        ``"optimal"`` (one-to-one assignment) or ``"deepict"`` (greedy by score, see the module).
    tomograms : str
        Which tomograms count: ``"truth"``, ``"common"`` or ``"strict"`` (see above).
    by_class : bool, optional
        Match only within a class; default: when both tables have classes in common.
    pred_class, truth_class : str, optional
        Keep only this class of the predictions / of the truth.
    curve_points : int
        Score thresholds of the precision/recall curve (``optimal``); 0 computes no curve.
    pred_path, truth_path : path, optional
        The tables' files, named in error messages.

    Returns
    -------
    PickEvaluation
        The metrics (overall, per class and per tomogram) and both tables with the outcome of every row.
    """
    unit = check_unit(unit)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tolerance must be a number, got {tolerance!r}") from exc
    if not np.isfinite(tolerance) or tolerance <= 0:
        raise ConfigError(f"tolerance must be a positive number, got {tolerance}")
    pred = _prepare(pred, pred_class, pred_path, "predictions")
    truth = _prepare(truth, truth_class, truth_path, "truth")
    pxyz = coordinates(pred, unit, pred_path)
    txyz = coordinates(truth, unit, truth_path)
    if pred_class is not None or truth_class is not None:
        by_class = False
    by_class = _class_mode(pred, truth, by_class)
    evaluated, notes = _tomogram_check(pred, truth, tomograms)
    keep_p = pred["tomo"].isin(evaluated).to_numpy()
    keep_t = truth["tomo"].isin(evaluated).to_numpy()
    pred, pxyz = pred[keep_p].reset_index(drop=True), pxyz[keep_p]
    truth, txyz = truth[keep_t].reset_index(drop=True), txyz[keep_t]
    if not by_class:
        tc = sorted(set(truth["class"]))
        label = truth_class or pred_class or (tc[0] if len(tc) == 1 else "all")
        pred["class"] = label
        truth["class"] = label
    pg, tg = _group_ids(pred, truth)
    has_score = "score" in pred.columns and len(pred) > 0 and bool(np.all(np.isfinite(pred["score"].to_numpy(float))))
    if protocol == "deepict" and not has_score:
        notes.append("predictions have no score column: visited in table order")
    scores = pred["score"].to_numpy(float) if has_score else None
    order = np.argsort(-scores, kind="stable") if scores is not None else np.arange(len(pred))

    if protocol == "optimal":
        pairs = candidate_pairs(pxyz, txyz, tolerance, pg, tg)
        m = match_optimal(pxyz, txyz, tolerance, pg, tg, pairs=pairs)
        status = np.where(m.pred_to_truth >= 0, TP, 0).astype(np.int8)
        p2t, pdist, hits = m.pred_to_truth, m.pred_dist, m.truth_hits
    else:
        g = match_greedy(pxyz, txyz, tolerance, order, pg, tg)
        status, p2t, pdist, hits = g.status, g.pred_to_truth, g.pred_dist, g.truth_hits
    t2p = np.full(len(truth), -1, dtype=np.int64)
    t2p[p2t[p2t >= 0]] = np.flatnonzero(p2t >= 0)

    pred_out = pred.copy()
    pred_out["status"] = np.select([status == TP, status == REDUNDANT], ["TP", "redundant"], "FP")
    pred_out["match"] = p2t
    pred_out["distance"] = pdist
    truth_out = truth.copy()
    truth_out["status"] = np.where(t2p >= 0, "TP", "FN")
    truth_out["match"] = t2p
    truth_out["hits"] = hits

    def summary(pmask: np.ndarray, tmask: np.ndarray, curve: bool = True) -> dict[str, Any]:
        st = status[pmask]
        tp = int((st == TP).sum())
        red = int((st == REDUNDANT).sum())
        d = pdist[pmask][st == TP]
        out = _row(int(pmask.sum()), tp, red, int(tmask.sum()), int((hits[tmask] > 1).sum()), float(d.sum()))
        if protocol == "deepict":
            out["redundant"] = red
            sel = order[pmask[order]]
            out.update(curve_summary(status[sel], int(tmask.sum()), scores[sel] if scores is not None else None))
        elif curve and scores is not None and curve_points > 0:
            out["curve"] = _score_curve(pairs, pmask, tmask, pxyz, txyz, tolerance, scores, curve_points)
        return out

    all_p = np.ones(len(pred), dtype=bool)
    all_t = np.ones(len(truth), dtype=bool)
    metrics: dict[str, Any] = {
        "protocol": protocol,
        "tolerance": tolerance,
        "unit": unit,
        **summary(all_p, all_t),
    }
    classes = sorted(set(truth["class"]) | set(pred["class"]))
    pcls, tcls = pred["class"].to_numpy(), truth["class"].to_numpy()
    metrics["per_class"] = {c: summary(pcls == c, tcls == c, curve=len(classes) > 1) for c in classes}
    if len(classes) == 1 and "curve" in metrics:
        metrics["per_class"][classes[0]]["curve"] = metrics["curve"]
    ptomo, ttomo = pred["tomo"].to_numpy(), truth["tomo"].to_numpy()
    metrics["per_tomogram"] = {t: summary(ptomo == t, ttomo == t, curve=False) for t in evaluated}
    metrics["per_tomogram_class"] = _group_rows(pred, truth, status, pdist, hits)
    if by_class and len(classes) > 1:
        metrics["confusion"] = confusion_matrix(pred, truth, pxyz, txyz, tolerance)
    metrics["notes"] = notes
    return PickEvaluation(metrics, pred_out, truth_out, notes)


def _row(rr: int, tp: int, redundant: int, n_truth: int, mh: int, dist_sum: float) -> dict[str, Any]:
    fp = rr - tp - redundant
    out: dict[str, Any] = {"rr": rr, "tp": tp, "fp": fp, "fn": n_truth - tp, "n_truth": n_truth, "mh": mh}
    out["ad"] = dist_sum / tp if tp else None
    out.update(ratios(tp, fp, n_truth - tp))
    return out


def _group_rows(
    pred: pd.DataFrame, truth: pd.DataFrame, status: np.ndarray, pdist: np.ndarray, hits: np.ndarray
) -> list[dict[str, Any]]:
    """Counts per (tomogram, class), computed for all groups at once with bincount."""
    keys = pd.concat([pred[["tomo", "class"]], truth[["tomo", "class"]]], ignore_index=True)
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(keys), sort=True)
    pk, tk = codes[: len(pred)], codes[len(pred) :]
    n = len(uniq)
    is_tp = status == TP

    def count(k: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(k, weights=w, minlength=n)

    rr, tp, red = count(pk), count(pk, is_tp), count(pk, status == REDUNDANT)
    dsum = count(pk, np.where(is_tp, np.nan_to_num(pdist), 0.0))
    nt, mh = count(tk), count(tk, hits > 1)
    rows = []
    for i, (t, c) in enumerate(uniq):
        row = _row(int(rr[i]), int(tp[i]), int(red[i]), int(nt[i]), int(mh[i]), float(dsum[i]))
        if red[i]:
            row["redundant"] = int(red[i])
        rows.append({"tomo": t, "class": c, **row})
    return rows


def _prepare(df: pd.DataFrame, select: str | None, path: Any, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what} must be a table (pandas DataFrame), got {type(df).__name__}", path)
    out = df.reset_index(drop=True).copy()
    out["tomo"] = out["tomo"].astype(str) if "tomo" in out.columns else ""
    out["class"] = out["class"].astype(str) if "class" in out.columns else ""
    if select is not None:
        if select not in set(out["class"]):
            raise InputError(f"class {select!r} not in the {what} table (it has {sorted(set(out['class']))})", path)
        out = out[out["class"] == select].reset_index(drop=True)
    return out


def _group_ids(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    keys = pd.concat([pred[["tomo", "class"]], truth[["tomo", "class"]]], ignore_index=True)
    codes, _ = pd.factorize(keys["tomo"] + "\x00" + keys["class"])
    return codes[: len(pred)].astype(np.int64), codes[len(pred) :].astype(np.int64)


def _score_curve(
    pairs: Any,
    pmask: np.ndarray,
    tmask: np.ndarray,
    pxyz: np.ndarray,
    txyz: np.ndarray,
    tolerance: float,
    scores: np.ndarray,
    n_points: int,
) -> dict[str, list]:
    """Precision, recall and F1 of the optimal matching at score thresholds (quantiles of the scores)."""
    from deepict_dask.evaluate.matching import Pairs

    s = scores[pmask]
    n_truth = int(tmask.sum())
    if len(s) == 0:
        return {"threshold": [], "precision": [], "recall": [], "f1": []}
    thresholds = np.unique(np.quantile(s, np.linspace(0, 1, n_points)))
    out: dict[str, list] = {"threshold": [], "precision": [], "recall": [], "f1": []}
    in_scope = pmask[pairs.pred] & tmask[pairs.truth]
    for t in thresholds:
        keep = pmask & (scores >= t)
        sel = in_scope & keep[pairs.pred]
        sub = Pairs(pairs.pred[sel], pairs.truth[sel], pairs.dist[sel])
        m = match_optimal(pxyz, txyz, tolerance, pairs=sub)
        tp = int((m.pred_to_truth >= 0).sum())
        rr = int(keep.sum())
        r = ratios(tp, rr - tp, n_truth - tp)
        out["threshold"].append(float(t))
        out["precision"].append(r["precision"])
        out["recall"].append(r["recall"])
        out["f1"].append(r["f1"])
    return out


def confusion_matrix(
    pred: pd.DataFrame, truth: pd.DataFrame, pxyz: np.ndarray, txyz: np.ndarray, tolerance: float
) -> dict[str, Any]:
    """Class confusion from a class-agnostic optimal matching within each tomogram.

    Rows are true classes plus ``(none)`` for predictions matching no truth; columns are predicted
    classes plus ``(missed)`` for truth particles no prediction matched.
    """
    pg, _ = pd.factorize(pd.concat([pred["tomo"], truth["tomo"]], ignore_index=True))
    m = match_optimal(pxyz, txyz, tolerance, pg[: len(pred)], pg[len(pred) :])
    tclasses = sorted(set(truth["class"]))
    pclasses = sorted(set(pred["class"]))
    rows = tclasses + ["(none)"]
    cols = pclasses + ["(missed)"]
    mat = np.zeros((len(rows), len(cols)), dtype=np.int64)
    ri = {c: i for i, c in enumerate(rows)}
    ci = {c: i for i, c in enumerate(cols)}
    pcls = pred["class"].to_numpy()
    tcls = truth["class"].to_numpy()
    for i, j in enumerate(m.pred_to_truth.tolist()):
        mat[ri[tcls[j]] if j >= 0 else ri["(none)"], ci[pcls[i]]] += 1
    for j in np.flatnonzero(m.truth_to_pred < 0).tolist():
        mat[ri[tcls[j]], ci["(missed)"]] += 1
    return {"truth_classes": rows, "pred_classes": cols, "matrix": mat.tolist()}
