"""Orthoslice preview: central XY, XZ and YZ slices of the tomogram with the truth overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepict_dask.io.atomic import atomic_path

from .shapes import CLASS_IDS

CLASS_COLOURS = {
    "ribosome": "#ffd400", "fas": "#ff3ad3", "proteasome": "#33d6ff", "globular": "#7dff5a",
    "microtubule": "#ff8c1a", "actin": "#c28bff",
}


def write_preview(sim, path, z: int | None = None) -> Path:
    """Write a PNG with the tomogram's orthoslices, raw (top) and with labels and membranes (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    shape = sim.shape
    cz, cy, cx = (z if z is not None else shape[0] // 2), shape[1] // 2, shape[2] // 2

    def sl(a, axis, idx):
        s = [slice(None)] * 3
        s[axis] = idx
        return np.asarray(a[tuple(s)])

    views = [(f"XY (z={cz})", 0, cz), (f"XZ (y={cy})", 1, cy), (f"YZ (x={cx})", 2, cx)]
    colours = np.zeros((max(CLASS_IDS.values()) + 1, 4))
    for k, v in CLASS_IDS.items():
        colours[v] = matplotlib.colors.to_rgba(CLASS_COLOURS[k], 0.55)
    label_cmap = ListedColormap(colours)
    comp_cmap = ListedColormap([(0, 0, 0, 0), (0, 0, 0, 0), (0.2, 0.5, 1.0, 0.18), (0.2, 1.0, 0.5, 0.18)])
    widths = [shape[2], shape[2], shape[1]]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), gridspec_kw={"width_ratios": widths})
    for col, (title, axis, idx) in enumerate(views):
        # Display only: a 1-voxel Gaussian, as one would look at a real tomogram.
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(sl(sim.tomogram, axis, idx).astype(np.float32), 1.0)
        lo, hi = np.percentile(img, (1, 99))
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(title)
        ax = axes[1, col]
        ax.imshow(sl(sim.compartments, axis, idx), cmap=comp_cmap, vmin=0, vmax=3, interpolation="nearest")
        lab = sl(sim.labels, axis, idx).astype(float)
        ax.imshow(np.ma.masked_equal(lab, 0), cmap=label_cmap, vmin=0, vmax=len(colours) - 1, interpolation="nearest")
        mem = sl(sim.membrane, axis, idx)
        ax.imshow(np.ma.masked_equal(mem, 0), cmap=ListedColormap([(1, 0.2, 0.2, 0.8)]), interpolation="nearest")
    handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLOURS[k]) for k in CLASS_COLOURS]
    handles.append(plt.Rectangle((0, 0), 1, 1, color=(1, 0.2, 0.2)))
    fig.legend(handles, list(CLASS_COLOURS) + ["membrane"], loc="lower center", ncol=7, frameon=False)
    fig.suptitle(f"{sim.name}: {shape[0]}x{shape[1]}x{shape[2]} at {sim.voxel_size:g} A/voxel "
                 f"(display smoothed 1 voxel; blue: organelle, green: vesicle lumen)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
