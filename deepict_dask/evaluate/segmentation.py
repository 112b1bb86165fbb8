"""Voxel metrics of segmentations and probability maps, computed chunk by chunk with Dask.

Nothing is ever loaded whole: each pair of chunks (prediction, truth) is reduced to a tiny summary
(a table of (true label, predicted label) counts, or two histograms of scores for positive and
negative voxels), and the summaries are added up.

Precision/recall of a probability map are exact for *quantized* maps: integer maps (``uint8``,
``uint16``) are used level by level; float maps are rounded to ``levels`` equally spaced values in
[0, 1] (default 1001, i.e. steps of 0.001). The average precision is then computed exactly as
scikit-learn's ``average_precision_score`` does on the quantized scores:
``AP = sum_k (R_k - R_{k+1}) P_k`` over the distinct score levels from high to low.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import InputError

FLOAT_LEVELS = 1001
MAX_INT_LEVELS = 65536


def _array(vol: Any) -> da.Array:
    if isinstance(vol, xr.DataArray):
        vol = vol.data
    return vol if isinstance(vol, da.Array) else da.from_array(np.asarray(vol), chunks="auto")


def spatial_array(vol: Any, channel: str | int | None, path: Any, what: str) -> da.Array:
    """The 3D array to evaluate; a 4D (c, z, y, x) map needs ``channel`` (name or index)."""
    arr = _array(vol)
    if arr.ndim == 4:
        if channel is None:
            if arr.shape[0] == 1:
                return arr[0]
            names = list(vol["c"].values) if isinstance(vol, xr.DataArray) and "c" in vol.coords else []
            raise InputError(f"the {what} has {arr.shape[0]} channels {names}; choose one with channel (--class)", path)
        if isinstance(vol, xr.DataArray) and "c" in vol.coords and not isinstance(channel, int):
            names = [str(c) for c in vol["c"].values]
            if str(channel) not in names:
                raise InputError(f"the {what} has no class {channel!r} (it has {names})", path)
            return arr[names.index(str(channel))]
        return arr[int(channel)]
    if arr.ndim != 3:
        raise InputError(f"the {what} must be a 3D volume (z, y, x), got {arr.ndim} dimensions", path)
    return arr


def _same_grid(pred: Any, truth: Any, p: da.Array, t: da.Array, pred_path: Any, truth_path: Any) -> da.Array:
    """Check shapes and voxel sizes; return the truth rechunked like the prediction."""
    if p.shape != t.shape:
        raise InputError(
            f"prediction and truth have different shapes: {tuple(p.shape)} ({pred_path or 'prediction'}) "
            f"vs {tuple(t.shape)} ({truth_path or 'truth'}) (z, y, x)"
        )
    if isinstance(pred, xr.DataArray) and isinstance(truth, xr.DataArray):
        vp, vt = pred.attrs.get("voxel_size"), truth.attrs.get("voxel_size")
        if vp is not None and vt is not None and not np.allclose(np.ravel(vp), np.ravel(vt), rtol=0.01):
            raise InputError(f"prediction and truth have different voxel sizes: {tuple(np.ravel(vp))} vs {tuple(np.ravel(vt))} A")
    return t.rechunk(p.chunks)


def _pair_counts(p: np.ndarray, t: np.ndarray) -> dict[tuple[int, int], int]:
    if p.dtype.kind == "f" or t.dtype.kind == "f":
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
            raise InputError("mask has NaN or infinite values")
    pi = p.astype(np.int64).ravel()
    ti = t.astype(np.int64).ravel()
    if pi.size and (pi.min() < 0 or ti.min() < 0):
        raise InputError("masks must hold non-negative integer labels")
    codes, counts = np.unique(ti * (1 << 31) + pi, return_counts=True)
    return {(int(c >> 31), int(c & ((1 << 31) - 1))): int(n) for c, n in zip(codes, counts)}


def _merge(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _blocks(p: da.Array, t: da.Array, fn: Any) -> list:
    pb = p.to_delayed().ravel()
    tb = t.to_delayed().ravel()
    return [dask.delayed(fn)(a, b) for a, b in zip(pb, tb)]


def mask_metrics(
    pred: Any,
    truth: Any,
    *,
    labels: list[int] | None = None,
    pred_path: Any = None,
    truth_path: Any = None,
) -> dict[str, Any]:
    """Voxel precision, recall, F1 (= Dice) and IoU per label of two label volumes of equal shape.

    Binary masks are label volumes with the single label 1. ``labels`` defaults to every non-zero
    label found in either volume. The top level holds the pooled (micro-averaged) counts over labels.

    Parameters
    ----------
    pred, truth : DataArray or array
        The predicted and the true label volumes (same grid; a one-channel CZYX volume counts as ZYX).
    labels : list of int, optional
        The labels to score.
    pred_path, truth_path : path, optional
        The volumes' files, named in error messages.

    Returns
    -------
    dict
        Pooled ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``iou``, ``n_voxels`` and
        ``per_class`` (label -> the same counts and ratios).
    """
    p = spatial_array(pred, None, pred_path, "prediction")
    t = _same_grid(pred, truth, p, spatial_array(truth, None, truth_path, "truth"), pred_path, truth_path)
    (counts,) = dask.compute(dask.delayed(_merge)(_blocks(p, t, _pair_counts)))
    found = sorted({k for pair in counts for k in pair if k != 0})
    labels = found if labels is None else [int(x) for x in labels]
    per: dict[str, Any] = {}
    tot = {"tp": 0, "fp": 0, "fn": 0}
    for lab in labels:
        tp = sum(n for (a, b), n in counts.items() if a == lab and b == lab)
        fp = sum(n for (a, b), n in counts.items() if a != lab and b == lab)
        fn = sum(n for (a, b), n in counts.items() if a == lab and b != lab)
        per[str(lab)] = _voxel_ratios(tp, fp, fn)
        for k, v in (("tp", tp), ("fp", fp), ("fn", fn)):
            tot[k] += v
    out = _voxel_ratios(tot["tp"], tot["fp"], tot["fn"])
    out["n_voxels"] = int(np.prod(p.shape))
    out["per_class"] = per
    return out


def _voxel_ratios(tp: int, fp: int, fn: int) -> dict[str, Any]:
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
    }


def quantization(dtype: Any, attrs: dict | None = None, levels: int | None = None) -> tuple[int, float]:
    """(number of levels, divisor that turns a level into a probability) for a map of ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        scale = None
        for key in ("probability_scale", "scale_factor"):
            if attrs and key in attrs:
                scale = float(attrs[key])
        if scale is None:
            scale = float(np.iinfo(dtype).max) if dtype.itemsize <= 2 else 1.0
        n = int(np.iinfo(dtype).max) + 1 if dtype.itemsize <= 2 else None
        if n is None or n > MAX_INT_LEVELS:
            raise InputError(f"an integer probability map must be 8 or 16 bit, got {dtype}")
        return n, scale
    if dtype.kind == "f":
        n = int(levels or FLOAT_LEVELS)
        if n < 2:
            raise InputError(f"levels must be at least 2, got {n}")
        return n, float(n - 1)
    raise InputError(f"a probability map must hold numbers, not {dtype}")


def quantize(block: np.ndarray, n_levels: int, scale: float) -> np.ndarray:
    """Integer score levels of a block (rounding floats to the nearest level)."""
    if block.dtype.kind in "ui":
        return block.astype(np.int64)
    if not np.all(np.isfinite(block)):
        raise InputError("probability map has NaN or infinite values")
    if block.size and (block.min() < 0 or block.max() > 1):
        raise InputError(f"probability map values must lie in [0, 1], found {block.min():g}..{block.max():g}")
    return np.rint(block.astype(np.float64) * scale).astype(np.int64)


def _histograms(p: np.ndarray, t: np.ndarray, n_levels: int, scale: float, positive: int | None) -> np.ndarray:
    q = quantize(p, n_levels, scale).ravel()
    pos = (t > 0) if positive is None else (t == positive)
    pos = pos.ravel()
    out = np.empty((2, n_levels), dtype=np.int64)
    out[0] = np.bincount(q[pos], minlength=n_levels)[:n_levels]
    out[1] = np.bincount(q[~pos], minlength=n_levels)[:n_levels]
    return out


def score_histograms(
    prob: Any,
    truth: Any,
    *,
    channel: str | int | None = None,
    truth_label: int | None = None,
    levels: int | None = None,
    pred_path: Any = None,
    truth_path: Any = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-level voxel counts of positives and negatives, and the level-to-probability divisor."""
    p = spatial_array(prob, channel, pred_path, "probability map")
    t = _same_grid(prob, truth, p, spatial_array(truth, None, truth_path, "truth"), pred_path, truth_path)
    attrs = prob.attrs if isinstance(prob, xr.DataArray) else None
    n_levels, scale = quantization(p.dtype, attrs, levels)
    parts = _blocks(p, t, lambda a, b: _histograms(a, b, n_levels, scale, truth_label))
    (hist,) = dask.compute(dask.delayed(lambda xs: np.sum(xs, axis=0))(parts))
    return hist[0], hist[1], scale


def pr_from_histograms(pos: np.ndarray, neg: np.ndarray, scale: float) -> dict[str, Any]:
    """PR curve, average precision, best F1 and its threshold from per-level counts.

    The curve has one point per level that holds any voxel, thresholds descending; predicting
    "score >= threshold" positive.
    """
    pos = np.asarray(pos, dtype=np.int64)
    neg = np.asarray(neg, dtype=np.int64)
    n_pos = int(pos.sum())
    occupied = np.flatnonzero((pos + neg) > 0)[::-1]
    tp = np.cumsum(pos[::-1])[::-1][occupied]
    fp = np.cumsum(neg[::-1])[::-1][occupied]
    thresholds = occupied / scale
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos if n_pos else np.zeros(len(tp))
    r_prev = np.concatenate([[0.0], recall[:-1]])
    ap = float(np.sum((recall - r_prev) * precision)) if n_pos else None
    f1 = np.divide(2 * tp, 2 * tp + fp + (n_pos - tp), out=np.zeros(len(tp)), where=(2 * tp + fp + (n_pos - tp)) > 0)
    best = int(np.argmax(f1)) if len(f1) else None
    return {
        "auprc": ap,
        "n_positive": n_pos,
        "n_negative": int(neg.sum()),
        "best_f1": float(f1[best]) if best is not None else 0.0,
        "best_threshold": float(thresholds[best]) if best is not None else None,
        "curve": {"threshold": thresholds.tolist(), "precision": precision.tolist(), "recall": recall.tolist()},
    }


def at_threshold(pos: np.ndarray, neg: np.ndarray, scale: float, threshold: float) -> dict[str, Any]:
    """Voxel counts and ratios when voxels with score >= ``threshold`` are called positive."""
    first = int(np.ceil(threshold * scale - 1e-9))
    tp = int(pos[first:].sum())
    fp = int(neg[first:].sum())
    fn = int(pos[:first].sum())
    return {"threshold": float(threshold), **_voxel_ratios(tp, fp, fn)}


def probability_metrics(
    prob: Any,
    truth: Any,
    *,
    threshold: float = 0.5,
    channel: str | int | None = None,
    truth_label: int | None = None,
    levels: int | None = None,
    pred_path: Any = None,
    truth_path: Any = None,
) -> dict[str, Any]:
    """AUPRC, PR curve, best F1 and voxel metrics at ``threshold`` of a probability map vs a mask.

    The top level holds the voxel ``tp, fp, fn, precision, recall, f1`` at ``threshold``.

    Parameters
    ----------
    prob : DataArray or array
        The probability map: float in [0, 1], or uint8/uint16 scaled to the full range.
    truth : DataArray or array
        The true mask or label volume, on the same grid.
    threshold : float
        The probability (in [0, 1]) at which the voxel metrics are taken.
    channel : str or int, optional
        The class (name or index) of a multi-channel map.
    truth_label : int, optional
        The label that counts as positive in ``truth`` (default: every non-zero voxel).
    levels : int, optional
        Probability levels of a float map's histogram (default 1001).
    pred_path, truth_path : path, optional
        The volumes' files, named in error messages.

    Returns
    -------
    dict
        The voxel metrics at ``threshold``, ``auprc``, ``best_f1`` and ``best_threshold``, the PR
        ``curve``, the positive/negative voxel counts, ``levels`` and ``per_class``.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise InputError(f"threshold must lie in [0, 1], got {threshold}")
    pos, neg, scale = score_histograms(
        prob, truth, channel=channel, truth_label=truth_label, levels=levels, pred_path=pred_path, truth_path=truth_path
    )
    out = at_threshold(pos, neg, scale, threshold)
    out.update(pr_from_histograms(pos, neg, scale))
    out["levels"] = len(pos)
    name = str(channel) if channel is not None else (str(truth_label) if truth_label is not None else "foreground")
    out["per_class"] = {name: {k: out[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1", "iou")}}
    return out


def map_kind(pred: xr.DataArray, kind: str = "auto") -> str:
    """``probability`` or ``labels``: with ``auto``, float maps and maps that record a probability
    scale (``probability_scale``/``scale_factor``, as quantized predictions do) are probabilities."""
    if kind != "auto":
        return kind
    is_prob = pred.dtype.kind == "f" or any(k in pred.attrs for k in ("probability_scale", "scale_factor"))
    return "probability" if is_prob else "labels"
