"""Voxel-wise counts and F1 per class (prediction = probability > 0.5, or argmax for softmax)."""

from __future__ import annotations

import numpy as np
import torch

from deepict_dask.train.losses import class_index


def confusion(logits: torch.Tensor, target: torch.Tensor, activation: str) -> np.ndarray:
    """(C, 3) array of true positives, false positives, false negatives per class."""
    c = target.shape[1]
    if activation == "softmax":
        pred_idx = logits.argmax(dim=1)
        true_idx = class_index(target)
        pred = torch.stack([pred_idx == k + 1 for k in range(c)], dim=1)
        truth = torch.stack([true_idx == k + 1 for k in range(c)], dim=1)
    else:
        pred = logits > 0
        truth = target > 0
    dims = [0] + list(range(2, pred.ndim))
    tp = (pred & truth).sum(dims)
    fp = (pred & ~truth).sum(dims)
    fn = (~pred & truth).sum(dims)
    return torch.stack([tp, fp, fn], dim=1).cpu().numpy().astype(np.int64)


def f1_scores(counts: np.ndarray) -> np.ndarray:
    """F1 per class from (C, 3) counts; a class absent from both truth and prediction scores 1."""
    tp, fp, fn = counts[:, 0].astype(float), counts[:, 1].astype(float), counts[:, 2].astype(float)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
