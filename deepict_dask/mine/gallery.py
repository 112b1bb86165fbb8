"""One self-contained HTML page showing what each k-means cluster of patches is.

Per cluster (largest first): its size, the decoded cluster centre as a montage of all its z slices
(for codes without a decoder, the cluster's most typical patch instead),
the plain average of the cluster's raw patches as the same montage beside it (what the decoder shows
should also be in the data), and where its patches lie in the tomogram: their centres marked on the
three central orthoslices (projected along the viewing axis). A clusters table (CSV) is written too.
Like :mod:`deepict_dask.evaluate.report`, images are inline base64 PNGs and nothing external or
scripted is used, so the file can be mailed or opened anywhere. Both files are written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.volume import spatial_shape
from deepict_dask.mine.options import GalleryOptions

MAX_PLANE = 256  # orthoslices are shown at most this many pixels wide (strided)
MARK = (230, 159, 0)  # Okabe-Ito orange


def _png(rgb_or_grey: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> bytes:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgb_or_grey, cmap="gray", vmin=vmin, vmax=vmax, format="png")
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}">'


def montage(volume: np.ndarray, columns: int = 8, zoom: int = 3) -> np.ndarray:
    """All z slices of ``volume`` (D, H, W) tiled row by row, one pixel apart, enlarged ``zoom`` times.

    Contrast: 1st to 99th percentile of the whole volume, so slices are comparable; gaps are white.
    """
    d, h, w = volume.shape
    rows = -(-d // columns)
    lo, hi = np.percentile(volume, [1, 99]) if volume.size else (0.0, 1.0)
    scaled = np.clip((volume - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    out = np.ones((rows * (h + 1) - 1, min(d, columns) * (w + 1) - 1), np.float32)
    for i in range(d):
        r, c = divmod(i, columns)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = scaled[i]
    return np.kron(out, np.ones((zoom, zoom), np.float32))


def cluster_means(stack: Any, labels: np.ndarray, k: int) -> np.ndarray:
    """Average raw patch of every cluster ``(k, D, H, W)``, read chunk by chunk from the stack."""
    sums = np.zeros((k, *stack.shape[1:]), np.float64)
    step = int(stack.chunks[0]) if hasattr(stack, "chunks") and isinstance(stack.chunks[0], int) else 256
    for i0 in range(0, int(stack.shape[0]), step):
        block = np.asarray(stack[i0 : i0 + step], np.float64)
        lab = labels[i0 : i0 + len(block)]
        for c in np.unique(lab):
            sums[c] += block[lab == c].sum(0)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32)


def _planes(volume: xr.DataArray) -> tuple[list[np.ndarray], tuple[int, int, int], int]:
    """The central xy, xz, yz planes (grey, strided to at most MAX_PLANE pixels) and the stride."""
    data = volume.data if volume.ndim == 3 else volume.data[0]
    shape = spatial_shape(volume)
    step = max(1, -(-max(shape) // MAX_PLANE))
    cz, cy, cx = (n // 2 for n in shape)
    planes = [data[cz, ::step, ::step], data[::step, cy, ::step], data[::step, ::step, cx]]
    import dask

    planes = [np.asarray(p, np.float32) for p in dask.compute(*planes)]
    return planes, shape, step


def _grey_rgb(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1, 99])
    g = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return (np.repeat(g[..., None], 3, axis=2) * 255).astype(np.uint8)


def overlay(planes: list[np.ndarray], step: int, zyx: np.ndarray) -> np.ndarray:
    """The three planes side by side (RGB) with the points ``zyx`` (voxels) marked on each."""
    views = [_grey_rgb(p) for p in planes]
    axes = [(1, 2), (0, 2), (0, 1)]  # (row, column) axes of xy, xz, yz
    for view, (r, c) in zip(views, axes):
        rows = np.clip((zyx[:, r] // step).astype(int), 0, view.shape[0] - 1)
        cols = np.clip((zyx[:, c] // step).astype(int), 0, view.shape[1] - 1)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                view[np.clip(rows + dr, 0, view.shape[0] - 1), np.clip(cols + dc, 0, view.shape[1] - 1)] = MARK
    height = max(v.shape[0] for v in views)
    padded = [np.pad(v, ((0, height - v.shape[0]), (0, 4), (0, 0)), constant_values=255) for v in views]
    return np.concatenate(padded, axis=1)[::-1]  # origin at the bottom, like the report's orthoslices


def cluster_table(labels: np.ndarray, patches: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per cluster: size, fraction of all patches, the tomogram holding most of them."""
    sizes = np.bincount(labels, minlength=k)
    main = pd.Series(patches["tomo"].to_numpy()).groupby(labels).agg(lambda s: s.value_counts().index[0])
    return pd.DataFrame({"cluster": np.arange(k), "size": sizes, "fraction": sizes / max(1, len(labels)),
                         "main_tomo": [main.get(c, "") for c in range(k)]})


def write_gallery(out: str | os.PathLike, table_out: str | os.PathLike, *, decoded: np.ndarray | None, stack: Any,
                  labels: np.ndarray, patches: pd.DataFrame, volumes: Mapping[str, xr.DataArray],
                  opts: GalleryOptions = GalleryOptions(), typical: np.ndarray | None = None) -> pd.DataFrame:
    """Write the HTML gallery ``out`` and the clusters table ``table_out`` (CSV).

    Parameters
    ----------
    decoded, typical
        Decoded cluster centres ``(k, D, H, W)``, or (codes without a decoder) each cluster's most
        typical patch; exactly one of them.
    stack, labels, patches
        Patch stack, the cluster of each patch, the patch coordinate table (``tomo``, ``x, y, z``).
    volumes
        Tomogram name -> volume for the orthoslice overlays (a cluster whose tomogram is missing
        is shown without one).

    Returns
    -------
    The clusters table.
    """
    if (decoded is None) == (typical is None):
        raise ValueError("give decoded cluster centres or typical patches, not both or neither")
    first = decoded if decoded is not None else typical
    what = "decoded centre" if decoded is not None else "typical patch"
    k = int(first.shape[0])
    labels = np.asarray(labels, dtype=np.int64)
    table = cluster_table(labels, patches, k)
    means = cluster_means(stack, labels, k)
    planes = {name: _planes(v) for name, v in volumes.items()}
    zyx_all = patches[["z", "y", "x"]].to_numpy(float)
    order = table.sort_values(["size", "cluster"], ascending=[False, True])["cluster"].to_numpy()
    if opts.max_clusters is not None:
        order = order[: opts.max_clusters]
    parts = [f"<h1>{html.escape(opts.title)}</h1>",
             f"<p>{len(labels)} patches of {'x'.join(str(s) for s in stack.shape[1:])} voxels, {k} clusters. "
             f"Per cluster: the {'decoded cluster centre' if decoded is not None else 'most typical patch (closest to the centre)'} "
             "(all z slices), the average of its raw patches, and its "
             "patch centres (orange) on the central orthoslices xy | xz | yz of the tomogram holding most of them."
             "</p>", table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)]
    for c in order:
        size = int(table.loc[c, "size"])
        tomo = str(table.loc[c, "main_tomo"])
        figs = [_img(_png(montage(first[c], opts.columns)), f"cluster {c} {what}")] if size or decoded is not None else []
        if size:
            figs.append(_img(_png(montage(means[c], opts.columns)), f"cluster {c} average patch"))
        if size and tomo in planes:
            p, _shape, step = planes[tomo]
            mine = (labels == c) & (patches["tomo"].to_numpy() == tomo)
            figs.append(_img(_png(overlay(p, step, zyx_all[mine])), f"cluster {c} positions in {tomo}"))
        caption = f"{what} | average patch | positions" if size else (
            "decoded centre (empty cluster)" if decoded is not None else "empty cluster")
        parts.append(f'<section><h3>Cluster {c}: {size} patches ({100 * size / max(1, len(labels)):.1f}%)'
                     f'{", mostly " + html.escape(tomo) if size else ""}</h3><p>{caption}</p>'
                     f'<div class="row">{"".join(figs)}</div></section>')
    style = ("body{font-family:sans-serif;margin:1.5em}img{margin:0 1em 1em 0;vertical-align:top}"
             "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(opts.title)}</title>"
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_path(table_out) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return table
