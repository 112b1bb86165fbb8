"""Touching ribosomes: connected components vs watershed vs peaks on the same probability map.

A crowded simulated lamella (``preset="cell"`` with ``crowded=0.10``: ribosomes packed to 10 % of
the cytosol) is turned into ribosome probability maps two ways:

* ``model``: the shipped ``demo3d`` network run by the inference engine;
* ``truth``: the ground-truth ribosome mask blurred (sigma 1.5 voxels) into a soft map, i.e. what a
  perfect network would output; it isolates the clustering step.

On each map the pick stage's blockwise engine clusters with ``cc``, ``watershed`` and ``peaks``
(same threshold, same minimum size); ribosome F1 comes from
:func:`deepict_dask.evaluate.picking.evaluate_picks` (optimal matching, tolerance in voxels) and
time is relative to ``cc`` on the same map. Run: ``python benchmarks/bench_watershed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

VOXEL = 13.48
THRESHOLD = 0.5
MODEL = "deepict_dask/data/models/demo3d.safetensors"


def _simulate(quick: bool):
    from deepict_dask.simulate import simulate_tomogram

    shape = (64, 160, 160) if quick else (96, 256, 256)
    return simulate_tomogram(shape=shape, voxel_size=VOXEL, seed=7, preset="cell", crowded=0.10)


def _truth_map(sim) -> np.ndarray:
    from scipy import ndimage

    rib = (np.asarray(sim.labels) == sim.class_ids["ribosome"]).astype(np.float32)
    return np.clip(ndimage.gaussian_filter(rib, 1.5) * 1.2, 0.0, 1.0)


def _model_map(sim) -> np.ndarray | None:
    """Ribosome probabilities from the shipped 3D model, or None when it cannot run here."""
    from pathlib import Path

    from deepict_dask.errors import DeepictError
    from deepict_dask.inference.predict import PredictOptions, make_ref, predict_volume
    from deepict_dask.io.volume import make_volume

    path = Path(__file__).resolve().parents[1] / MODEL
    if not path.exists():
        return None
    try:
        opts = PredictOptions(device="cpu", chunk=128)
        pred = predict_volume(make_volume(np.asarray(sim.tomogram), (VOXEL,) * 3), make_ref(path, opts), opts)
        return np.asarray(pred.probabilities.sel(c="ribosome").data.compute(scheduler="threads"), np.float32)
    except (DeepictError, ImportError) as exc:  # model not usable: report and keep the truth map
        print(f"model map unavailable: {exc}")
        return None


def _pick(prob: np.ndarray, method: str, params: dict, min_size: int, chunks: int, threshold: float = THRESHOLD):
    """The pick stage's blockwise labelling + merge, then the size filter; table in voxels (basin
    centroids for every method, as ``deepict pick`` writes them)."""
    import dask
    import dask.array as da

    from deepict_dask.pick import stats as st
    from deepict_dask.pick.label import BlockSpec, build_pass
    from deepict_dask.pick.methods import METHODS

    arr = da.from_array(prob, chunks=chunks)
    _, parts, pairs, _ = build_pass(arr, None, METHODS[method], BlockSpec(threshold=threshold), params, None, (VOXEL,) * 3)
    parts, pairs = dask.compute(parts, pairs, scheduler="threads")
    table, _ = st.merge_partials(parts, pairs)
    return table[table["size"] >= min_size].reset_index(drop=True)


def _f1(table, truth, tolerance: float) -> float:
    from deepict_dask.evaluate.picking import evaluate_picks

    return float(evaluate_picks(table[["x", "y", "z"]], truth[["x", "y", "z"]], tolerance, unit="vox").metrics["f1"])


def _compare(prob: np.ndarray, truth, radius_vox: float, chunks: int, repeats: int, threshold: float) -> dict[str, float]:
    from deepict_dask.pick.methods.watershed import split_params

    min_size = int(0.15 * 4 / 3 * np.pi * radius_vox**3)
    tolerance = radius_vox
    out: dict[str, float] = {}
    # watershed/peaks with their default (coarsen="auto") and, as "*_full", at full resolution
    methods = ("cc", "watershed", "peaks", "watershed_full", "peaks_full")
    params = {m: {} if m == "cc" else split_params(
        m.removesuffix("_full"), min_distance=None, radius=radius_vox, voxel_size=(VOXEL,) * 3, shape=prob.shape,
        coarsen=1 if m.endswith("_full") else None) for m in methods}
    for method in methods:  # also warms up each method once
        table = _pick(prob, method.removesuffix("_full"), params[method], min_size, chunks, threshold)
        out[f"{method}_f1"] = round(_f1(table, truth, tolerance), 3)
        out[f"{method}_n"] = len(table)
    # timed in rounds, the methods interleaved, best of the rounds: the machine's speed drifts by
    # 10-20 % from one second to the next, which swung single runs of ~0.2 s by more than that
    times = {m: np.inf for m in methods}
    for _ in range(repeats):
        for method in methods:
            t0 = time.perf_counter()
            _pick(prob, method.removesuffix("_full"), params[method], min_size, chunks, threshold)
            times[method] = min(times[method], time.perf_counter() - t0)
    if "coarsen" in params["watershed"]:
        out["coarsen"] = params["watershed"]["coarsen"]
    for method in methods[1:]:
        out[f"{method}_time_vs_cc"] = round(times[method] / times["cc"], 2)
        out[f"{method}_f1_gain"] = round(out[f"{method}_f1"] - out["cc_f1"], 3)
    out["cc_s"] = round(times["cc"], 3)
    return out


def run(quick: bool) -> dict[str, Any]:
    """Figures: ribosome F1 per method and time relative to cc, on the model map and the blurred truth."""
    sim = _simulate(quick)
    truth = sim.table[sim.table["class"] == "ribosome"].reset_index(drop=True)
    # effective radius of a ribosome in voxels (volume-equivalent sphere of the simulated shape)
    n_vox = int((np.asarray(sim.labels) == sim.class_ids["ribosome"]).sum())
    radius_vox = float((3 * n_vox / max(len(truth), 1) / (4 * np.pi)) ** (1 / 3))
    chunks = 64 if quick else 128
    repeats = 2 if quick else 7
    result: dict[str, Any] = {"shape": "x".join(map(str, sim.tomogram.shape)), "ribosomes": len(truth),
                              "ribosome_fraction": round(n_vox / np.asarray(sim.labels).size, 4),
                              "radius_vox": round(radius_vox, 2), "tolerance_vox": round(radius_vox, 2)}
    for name, prob in (("truth", _truth_map(sim)), ("model", _model_map(sim))):
        if prob is None:
            result[f"{name}_available"] = False
            continue
        result[f"{name}_max_prob"] = round(float(prob.max()), 3)
        # an under-confident model (max below 0.5) is thresholded at half the usual level
        threshold = THRESHOLD if prob.max() >= THRESHOLD else THRESHOLD / 2
        result[f"{name}_threshold"] = threshold
        for k, v in _compare(prob, truth, radius_vox, chunks, repeats, threshold).items():
            result[f"{name}_{k}"] = v
    return result


def figure(path: str, quick: bool = True) -> None:
    """A crowded region picked three ways (cc, watershed, peaks) on the blurred-truth map, one z-slice:
    basins in colour, picks as crosses, true ribosome centres within 3 slices as circles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    sim = _simulate(quick)
    prob = _truth_map(sim)
    truth = sim.table[sim.table["class"] == "ribosome"]
    n_vox = int((np.asarray(sim.labels) == sim.class_ids["ribosome"]).sum())
    radius_vox = float((3 * n_vox / max(len(truth), 1) / (4 * np.pi)) ** (1 / 3))
    # the slice through the most ribosomes
    z = int(np.bincount(np.round(truth["z"]).astype(int), minlength=prob.shape[0]).argmax())
    images, tables = {}, {}
    import cc3d

    from deepict_dask.pick.methods.watershed import split_params, split_volume

    fg = prob >= THRESHOLD
    images["cc"] = cc3d.connected_components(fg, connectivity=26)
    for method in ("watershed", "peaks"):
        params = split_params(method, min_distance=None, radius=radius_vox, voxel_size=(VOXEL,) * 3,
                              shape=prob.shape)
        images[method], _, _ = split_volume(prob, THRESHOLD, params)
    for method in ("cc", "watershed", "peaks"):
        params = {} if method == "cc" else split_params(
            method, min_distance=None, radius=radius_vox, voxel_size=(VOXEL,) * 3, shape=prob.shape)
        tables[method] = _pick(prob, method, params, int(0.15 * 4 / 3 * np.pi * radius_vox**3), 64)
    rng = np.random.default_rng(0)
    cmap = ListedColormap(np.vstack([[0, 0, 0, 1], np.c_[rng.uniform(0.25, 1, (4096, 3)), np.ones(4096)]]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), constrained_layout=True)
    near_t = truth[np.abs(truth["z"] - z) <= 3]
    for ax, method in zip(axes, ("cc", "watershed", "peaks")):
        lab = images[method][z]
        ax.imshow(prob[z], cmap="gray", alpha=1.0)
        ax.imshow(np.where(lab > 0, lab % 4096 + 1, 0), cmap=cmap, vmin=0, vmax=4096, alpha=0.55,
                  interpolation="nearest")
        t = tables[method]
        near = t[np.abs(t["z"] - z) <= 3]
        ax.scatter(near_t["x"], near_t["y"], s=90, facecolors="none", edgecolors="cyan", linewidths=1.2,
                   label="true ribosome")
        ax.scatter(near["x"], near["y"], marker="x", s=40, c="red", linewidths=1.5, label="pick")
        f1 = _f1(t, truth, radius_vox)
        ax.set_title(f"method {method}: {len(t)} picks, F1 {f1:.2f} (whole volume)")
        ax.set_axis_off()
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Crowded ribosomes (blurred ground truth, threshold {THRESHOLD}), slice z={z}; "
                 "colours: clusters / basins")
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small volume, one repeat")
    ap.add_argument("--figure", metavar="PNG", help="instead, draw the three methods on a crowded slice")
    args = ap.parse_args()
    if args.figure:
        figure(args.figure, quick=True)
        return
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
