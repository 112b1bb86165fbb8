"""Draw docs/figures/pick_context_<mode>.png from real ``pick`` runs on a small synthetic scene.

    python docs/figures/make_pick_context_figures.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from deepict_dask.io.volume import make_volume  # noqa: E402
from deepict_dask.pick.api import pick  # noqa: E402
from deepict_dask.pick.options import PickOptions  # noqa: E402

HERE = Path(__file__).parent


def scene():
    """A 2D-like scene (3 slices thick): a curved region (e.g. cytosol) and blobs in, across, near, far."""
    ny, nx = 80, 120
    yy, xx = np.mgrid[:ny, :nx]
    mask2 = (yy < 38 + 8 * np.sin(xx / 18.0))
    blobs = [(15, 20, 6), (30, 60, 7), (36, 95, 6), (48, 30, 5), (47, 75, 6), (68, 55, 6), (66, 100, 5)]
    prob2 = np.zeros((ny, nx), np.float32)
    for cy, cx, r in blobs:
        prob2 = np.maximum(prob2, np.clip(1.2 - np.hypot(yy - cy, xx - cx) / r, 0, 1) * 0.95)
    prob = np.repeat(prob2[None], 3, axis=0)
    mask = np.repeat(mask2[None], 3, axis=0)
    return make_volume(prob, 10.0, chunks=(3, 40, 40)), make_volume(mask, 10.0, chunks=(3, 40, 40)), prob2, mask2


def panel(ax, prob2, mask2, labels2, table, title, distance=None):
    ax.imshow(mask2, cmap=ListedColormap(["white", "#cfe3f7"]), interpolation="nearest")
    ax.contour(prob2 >= 0.5, levels=[0.5], colors="0.35", linewidths=1.0, linestyles="--")
    kept = np.ma.masked_where(labels2 == 0, labels2 > 0)
    ax.imshow(kept, cmap=ListedColormap(["#2ca02c"]), alpha=0.85, interpolation="nearest")
    if len(table):
        ax.plot(table["x"], table["y"], "k+", ms=8, mew=1.5)
    if distance is not None:
        from scipy.ndimage import binary_dilation

        grown = binary_dilation(mask2, iterations=distance)
        ax.contour(grown, levels=[0.5], colors="#1f77b4", linewidths=1.0, linestyles=":")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def main() -> None:
    v, m, prob2, mask2 = scene()
    kwargs = {"intersection": {}, "contact": {}, "colocalization": {"distance": "6vx"}}
    for mode, extra in kwargs.items():
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
        panel(axes[0], prob2, mask2, np.zeros_like(prob2, int), prob2[:0], "map >= 0.5 (dashed) and mask (blue)")
        for ax, inverse in zip(axes[1:], (False, True)):
            rule = {"target": "mask", "mode": mode, "invert": inverse, **extra}
            res = pick(v, PickOptions(threshold=0.5, context=rule), context_map=m, labels=True)
            lab = np.asarray(next(iter(res.labels.values())).values)[1]
            name = f"{mode}{' --exclude' if inverse else ''}: {len(res.table)} kept"
            panel(ax, prob2, mask2, lab, res.table, name, distance=extra.get("context_distance"))
        fig.suptitle(f"--context-mode {mode}: kept clusters green, centroids +", fontsize=11)
        fig.tight_layout()
        fig.savefig(HERE / f"pick_context_{mode}.png", dpi=90)
        plt.close(fig)


if __name__ == "__main__":
    main()
