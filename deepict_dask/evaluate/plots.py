"""Figures for evaluation and reports, rendered off-screen to PNG bytes.

Uses matplotlib's object API (``Figure`` + Agg canvas), never ``pyplot``: no global state, no
display needed, safe in worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: overlay colours of particle outcomes (colour-blind safe Okabe-Ito hues)
STATUS_COLOURS = {"TP": "#009E73", "FP": "#D55E00", "FN": "#56B4E9", "redundant": "#F0E442", "pick": "#E69F00"}
CONTOUR_COLOURS = ["#CC79A7", "#F0E442", "#0072B2", "#E69F00", "#009E73"]


def figure_png(fig: Figure) -> bytes:
    """``fig`` rendered off-screen as PNG bytes (100 dpi, tight box): every figure of a report or gallery."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def pr_curves_png(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str = "Precision-recall") -> bytes:
    """One PR line per entry: ``{name: {"recall": [...], "precision": [...]}}``."""
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    for name, c in curves.items():
        r, p = np.asarray(c["recall"], float), np.asarray(c["precision"], float)
        order = np.argsort(r, kind="stable")
        ax.plot(r[order], p[order], marker="." if len(r) < 60 else None, label=name)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="lower left")
    return figure_png(fig)


def f1_curves_png(curves: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str = "score threshold", title: str = "F1") -> bytes:
    """F1 (and precision/recall, dashed) against a threshold: ``{name: {"threshold", "f1", ...}}``."""
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    for i, (name, c) in enumerate(curves.items()):
        colour = f"C{i}"
        x = np.asarray(c["threshold"], float)
        ax.plot(x, c["f1"], color=colour, label=f"{name} F1")
        if "precision" in c and "recall" in c:
            ax.plot(x, c["precision"], color=colour, ls="--", lw=0.8, label=f"{name} precision")
            ax.plot(x, c["recall"], color=colour, ls=":", lw=0.8, label=f"{name} recall")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    return figure_png(fig)


def sweep_heatmap_png(grid: Sequence[Mapping[str, Any]]) -> bytes:
    """F1 over (threshold, minimum size) with the best cell marked."""
    df = pd.DataFrame(list(grid))
    table = df.pivot_table(index="threshold", columns="min_size", values="f1")
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.add_subplot()
    im = ax.imshow(table.to_numpy(), origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    ax.set_yticks(range(len(table.index)), [f"{v:g}" for v in table.index])
    ax.set_xlabel("minimum cluster size (voxels)")
    ax.set_ylabel("probability threshold")
    vals = table.to_numpy()
    bi, bj = np.unravel_index(np.nanargmax(vals), vals.shape)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if vals[i, j] > 0.6 else "white", weight="bold" if (i, j) == (bi, bj) else None)
    ax.set_title("F1 by threshold and minimum size")
    fig.colorbar(im, ax=ax, label="F1")
    return figure_png(fig)


def spectra_png(spectra: Mapping[str, pd.DataFrame]) -> bytes:
    """Rotationally averaged amplitude spectra: first column frequency, other columns amplitudes."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for name, df in spectra.items():
        x = df.iloc[:, 0].to_numpy(float)
        for col in df.columns[1:]:
            y = df[col].to_numpy(float)
            label = name if len(df.columns) == 2 else f"{name}: {col}"
            ax.plot(x, np.where(y > 0, y, np.nan), label=label)
    ax.set_yscale("log")
    ax.set_xlabel(str(next(iter(spectra.values())).columns[0]) if spectra else "frequency")
    ax.set_ylabel("amplitude")
    ax.set_title("Amplitude spectra")
    ax.grid(alpha=0.3)
    if spectra:
        ax.legend(fontsize=7)
    return figure_png(fig)


def _contrast(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def orthoslices_png(
    planes: Mapping[str, np.ndarray],
    points: pd.DataFrame | None = None,
    contours: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    *,
    title: str = "",
    aspect: Sequence[float] = (1.0, 1.0, 1.0),
) -> bytes:
    """Three orthoslices (xy, xz, yz) with points and contours drawn on them.

    ``planes`` maps "xy", "xz", "yz" to 2D images (rows = y, z, z; columns = x, x, y). ``points``
    has per-plane pixel columns ``<plane>_u, <plane>_v`` (NaN when the point is not near that plane)
    and a ``status`` column choosing the colour. ``contours`` maps a name to the same three planes of
    a mask (drawn at level 0.5). ``aspect`` is the (z, y, x) voxel size for correct proportions.
    """
    az, ay, ax_ = (float(a) for a in aspect)
    specs = [("xy", ay / ax_), ("xz", az / ax_), ("yz", az / ay)]
    widths = [planes[name].shape[1] for name, _ in specs]
    fig = Figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    handles: dict[str, Any] = {}
    for ax, (name, ratio) in zip(axes, specs):
        img = planes[name]
        lo, hi = _contrast(img)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=ratio, interpolation="nearest")
        for k, (cname, cplanes) in enumerate((contours or {}).items()):
            m = np.asarray(cplanes[name], float)
            if m.size and m.max() > 0.5 > m.min():
                ax.contour(m, levels=[0.5], colors=[CONTOUR_COLOURS[k % len(CONTOUR_COLOURS)]], linewidths=0.8)
                handles.setdefault(f"contour: {cname}", ax.plot([], [], color=CONTOUR_COLOURS[k % len(CONTOUR_COLOURS)])[0])
        if points is not None and len(points):
            sel = points[points[f"{name}_u"].notna()]
            for status, grp in sel.groupby("status"):
                colour = STATUS_COLOURS.get(str(status), STATUS_COLOURS["pick"])
                h = ax.scatter(grp[f"{name}_u"], grp[f"{name}_v"], s=28, facecolors="none", edgecolors=colour, linewidths=1.2)
                handles.setdefault(str(status), h)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(6, len(handles)), fontsize=8)
    if title:
        fig.suptitle(title)
    return figure_png(fig)
