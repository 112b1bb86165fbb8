"""Scoring a trained model on a simulated tomogram it has never seen (used for the demo models).

This is a small in-memory helper for validating models during development and for
``examples/README_models.md``; production prediction on large tomograms is
:mod:`deepict_dask.inference` (blockwise, distributed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from deepict_dask.models.spec import ModelInfo


def predict_array(module: torch.nn.Module, info: ModelInfo, image: np.ndarray, *, tile: int = 96,
                  margin: int = 12) -> np.ndarray:
    """Probabilities (classes, Z, Y, X) for an in-memory ZYX ``image`` (z-scored here).

    3D: overlapping cubic tiles, each keeping its centre (``margin`` voxels trimmed where it has a
    neighbour). 2D: slice by slice, whole slices.
    """
    img = ((image - image.mean()) / (image.std() or 1.0)).astype(np.float32)
    fg = slice(1, None) if info.activation == "softmax" else slice(None)
    out = np.zeros((len(info.classes),) + img.shape, np.float32)
    with torch.no_grad():
        if info.dim == 2:
            for z in range(img.shape[0]):
                p = module(torch.from_numpy(img[z])[None, None])
                out[:, z] = p[0, fg].numpy()
            return out
        step = tile - 2 * margin
        starts = [list(range(0, max(1, n - tile) + step, step)) for n in img.shape]
        for z0 in starts[0]:
            for y0 in starts[1]:
                for x0 in starts[2]:
                    lo = [min(s, max(0, n - tile)) for s, n in zip((z0, y0, x0), img.shape)]
                    sl = tuple(slice(a, min(a + tile, n)) for a, n in zip(lo, img.shape))
                    p = module(torch.from_numpy(np.ascontiguousarray(img[sl]))[None, None])[0, fg].numpy()
                    keep = []
                    for a, n, s in zip(lo, img.shape, sl):
                        k0 = 0 if a == 0 else margin
                        k1 = (s.stop - s.start) if s.stop == n else (s.stop - s.start) - margin
                        keep.append(slice(k0, k1))
                    dst = tuple(slice(s.start + k.start, s.start + k.stop) for s, k in zip(sl, keep))
                    out[(slice(None),) + dst] = p[(slice(None),) + tuple(keep)]
    return out


def centroids(prob: np.ndarray, threshold: float = 0.5, min_size: int = 1) -> pd.DataFrame:
    """Connected components of ``prob > threshold`` -> centroid table (x, y, z voxels, size, score)."""
    lab, n = ndimage.label(prob > threshold)
    if n == 0:
        return pd.DataFrame(columns=["x", "y", "z", "size", "score"])
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, idx)
    com = np.array(ndimage.center_of_mass(prob, lab, idx)).reshape(-1, 3)
    score = ndimage.mean(prob, lab, idx)
    df = pd.DataFrame({"x": com[:, 2], "y": com[:, 1], "z": com[:, 0], "size": sizes, "score": score})
    return df[df["size"] >= min_size].reset_index(drop=True)


def voxel_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = np.count_nonzero(pred & truth)
    return 2 * tp / max(np.count_nonzero(pred) + np.count_nonzero(truth), 1)


def score_on_simulation(model_path: str, seed: int = 200, shape: tuple[int, int, int] = (128, 256, 256),
                        threshold: float = 0.5, sim: Any = None) -> dict[str, Any]:
    """Simulate a fresh tomogram (``seed``; or pass ``sim``), predict, and score every class it knows.

    Particle classes: threshold -> connected components (at least 1/8 of a sphere of the class's
    radius) -> centroids, matched one-to-one to the truth within the class radius by
    :func:`deepict_dask.evaluate.picking.evaluate_picks` (picking F1). Membrane and compartments:
    voxel F1 at the threshold.
    """
    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.models import load_model
    from deepict_dask.simulate import simulate_tomogram
    from deepict_dask.simulate.shapes import class_radius

    module, info = load_model(model_path)
    if sim is None:
        sim = simulate_tomogram(shape, info.voxel_size, seed=seed, preset="cell")
    image = np.asarray(sim.tomogram, np.float32)
    prob = predict_array(module, info, image)
    scores: dict[str, Any] = {"seed": seed, "shape": list(shape), "threshold": threshold}
    for c, name in enumerate(info.classes):
        p = prob[c]
        if name in sim.class_ids:
            r = class_radius(name) / sim.voxel_size
            min_size = max(1, int(math.pi * 4 / 3 * r**3 / 8))
            picks = centroids(p, threshold, min_size).assign(tomo=sim.name, **{"class": name})
            truth = sim.table[sim.table["class"] == name]
            ev = evaluate_picks(picks, truth, r, unit="vox")
            m = {k: ev.metrics[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}
            m["voxel_f1"] = voxel_f1(p > threshold, np.asarray(sim.labels) == sim.class_ids[name])
            m["tolerance_vox"] = r
            scores[name] = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in m.items()}
        elif name == "membrane":
            scores[name] = {"voxel_f1": round(voxel_f1(p > threshold, np.asarray(sim.membrane) > 0), 4)}
        elif name in sim.compartment_ids:
            truth = np.asarray(sim.compartments) == sim.compartment_ids[name]
            scores[name] = {"voxel_f1": round(voxel_f1(p > threshold, truth), 4)}
    return scores
