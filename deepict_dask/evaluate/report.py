"""One self-contained HTML report of a run: metrics, curves, orthoslices with picks, spectra, tables.

What :func:`build_report` looks for in ``RUN_DIR`` (any depth; hidden folders and the inside of
Zarr stores are skipped):

==================================  ================================================================
``*.json``                          metrics written by ``deepict evaluate`` (recognised by their keys:
                                    picks have ``rr`` and ``per_class``; masks ``n_voxels`` or
                                    ``auprc``; sweeps ``grid``); other JSON files are ignored.
``*.csv``, ``*.star``               particle tables (project schema). A table whose file or folder
                                    name contains ``truth`` or ``gt`` (as a word) is ground truth;
                                    CSV files without coordinates are shown as plain tables (e.g. a
                                    per-tomogram summary).
``*.tsv``                           spectra: first column frequency, further columns amplitudes.
``*.ome.zarr`` / ``*.zarr``         per-tomogram images; the tomogram name is the file name without
                                    the suffix. The image at the root gives the orthoslices;
                                    ``predictions/<name>`` (probability maps, contour at 0.5) and
                                    ``labels/<name>`` (contour of label > 0) are drawn on top.
``*.yaml``, ``*.yml``               configuration, shown verbatim.
==================================  ================================================================

Picks are drawn on the orthoslices of their tomogram (rows whose ``tomo`` equals the image name):
with ground truth and a tolerance (``--tolerance`` or from a picks metrics file) they are coloured
as true positives, false positives and missed truth (FN); without, as plain picks.

Every image is an inline base64 PNG and every table inline HTML, so the file can be mailed or
opened anywhere; no scripts are used.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import DeepictError, InputError
from deepict_dask.io import tomogram_name
from deepict_dask.layout import PREDICTIONS, RunLayout

log = logging.getLogger(__name__)

MAX_TABLE_ROWS = 50
MAX_PLANE = 768
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
_TRUTH_WORD = re.compile(r"(^|[^a-z])(truth|gt|ground[_-]?truth)([^a-z]|$)", re.IGNORECASE)


@dataclass
class RunFiles:
    """The files of a run directory, by role."""

    metrics: list[tuple[Path, str, dict]] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    truth: list[Path] = field(default_factory=list)
    spectra: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)


def metrics_kind(data: Any) -> str | None:
    """'picks', 'masks' or 'sweep' for a metrics dict written by ``deepict evaluate``, else None."""
    if not isinstance(data, dict):
        return None
    if "grid" in data and "best_threshold" in data:
        return "sweep"
    if "rr" in data and "per_class" in data:
        return "picks"
    if "per_class" in data and ("n_voxels" in data or "auprc" in data):
        return "masks"
    return None


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if d.lower().endswith(ZARR_SUFFIXES):
                yield Path(dirpath) / d, True
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if not f.startswith("."):
                yield Path(dirpath) / f, False


def is_truth_path(path: Path, root: Path) -> bool:
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    return any(_TRUTH_WORD.search(part) for part in rel.parts)


def discover(run_dir: str | os.PathLike, truth: list[str | os.PathLike] | None = None) -> RunFiles:
    """Find metrics, tables, spectra, images and configs under ``run_dir``."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError("not a directory (deepict report needs a run directory)", root)
    found = RunFiles()
    explicit = {Path(t).resolve() for t in truth or []}
    for path, is_zarr in _walk(root):
        name = path.name.lower()
        if is_zarr:
            found.images.append(path)
        elif name.endswith(".json"):
            if path.stat().st_size > 50_000_000:
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            kind = metrics_kind(data)
            if kind:
                found.metrics.append((path, kind, data))
        elif name.endswith((".csv", ".star")):
            if path.resolve() in explicit:
                continue
            (found.truth if is_truth_path(path, root) else found.tables).append(path)
        elif name.endswith(".tsv"):
            found.spectra.append(path)
        elif name.endswith((".yaml", ".yml")):
            found.configs.append(path)
    found.truth += [Path(t) for t in truth or []]
    return found


# ---------------------------------------------------------------------------------------------- HTML


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table_html(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    shown = df.head(max_rows)
    out = shown.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0, classes="t")
    if len(df) > max_rows:
        out += f"<p class=note>first {max_rows} of {len(df)} rows</p>"
    return out


def _fmt_rows(rows: dict[str, dict], keys: list[str], label: str) -> pd.DataFrame:
    recs = []
    for name, row in rows.items():
        recs.append({label: name, **{k: row.get(k) for k in keys}})
    return pd.DataFrame(recs, columns=[label, *keys])


PICK_KEYS = ["rr", "tp", "fp", "fn", "mh", "ad", "precision", "recall", "f1", "miss_rate"]
DEEPICT_KEYS = ["redundant", "max_f1", "auprc", "best_score"]
MASK_KEYS = ["tp", "fp", "fn", "precision", "recall", "f1", "iou"]


def _picks_section(name: str, m: dict) -> str:
    from deepict_dask.evaluate import plots

    keys = PICK_KEYS + (DEEPICT_KEYS if m.get("protocol") == "deepict" else [])
    parts = [
        f"<p>{html.escape(str(m.get('protocol', 'optimal')))} matching, tolerance "
        f"{html.escape(str(m.get('tolerance')))} {html.escape(str(m.get('unit', '')))}</p>"
    ]
    pooled = pd.DataFrame([{"class": "pooled", **{k: m.get(k) for k in keys}}])
    parts.append(_table_html(pd.concat([_fmt_rows(m.get("per_class", {}), keys, "class"), pooled], ignore_index=True)))
    if len(m.get("per_tomogram", {})) > 1:
        parts.append("<h4>Per tomogram</h4>" + _table_html(_fmt_rows(m["per_tomogram"], keys, "tomogram")))
    if "confusion" in m:
        c = m["confusion"]
        conf = pd.DataFrame(c["matrix"], index=c["truth_classes"], columns=c["pred_classes"])
        conf.insert(0, "truth \\ predicted", conf.index)
        parts.append("<h4>Class confusion</h4>" + _table_html(conf))
    curves = {k: v["curve"] for k, v in m.get("per_class", {}).items() if v.get("curve", {}).get("threshold")}
    if m.get("curve", {}).get("threshold") and len(curves) != 1:
        curves["pooled"] = m["curve"]
    if curves:
        parts.append(
            "<div class=figs>"
            + _img(plots.pr_curves_png(curves, "Picks: precision-recall over score"), f"{name} PR curve")
            + _img(plots.f1_curves_png(curves, "score threshold", "Picks: F1 over score"), f"{name} F1 curve")
            + "</div>"
        )
    for note in m.get("notes", []):
        parts.append(f"<p class=note>{html.escape(str(note))}</p>")
    return "".join(parts)


def _masks_section(name: str, m: dict) -> str:
    from deepict_dask.evaluate import plots

    parts = [_table_html(_fmt_rows(m.get("per_class", {}), MASK_KEYS, "class"))]
    if m.get("auprc") is not None:
        parts.append(
            f"<p>AUPRC {m['auprc']:.4f}; best voxel F1 {m.get('best_f1', 0):.4f} at threshold "
            f"{m.get('best_threshold')}</p>"
        )
    curve = m.get("curve")
    if curve and curve.get("threshold"):
        parts.append(
            "<div class=figs>"
            + _img(plots.pr_curves_png({"voxels": curve}, "Segmentation: precision-recall"), f"{name} PR")
            + _img(plots.f1_curves_png({"voxels": _with_f1(curve)}, "probability threshold", "Segmentation: F1"), f"{name} F1")
            + "</div>"
        )
    return "".join(parts)


def _with_f1(curve: dict) -> dict:
    p = np.asarray(curve["precision"], float)
    r = np.asarray(curve["recall"], float)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return {**curve, "f1": f1.tolist()}


def _sweep_section(name: str, m: dict) -> str:
    from deepict_dask.evaluate import plots

    grid = pd.DataFrame(m["grid"])
    parts = [
        f"<p>Best: threshold {m['best_threshold']:g}, minimum size {m['best_min_size']} &rarr; F1 {m['f1']:.4f} "
        f"(precision {m['precision']:.4f}, recall {m['recall']:.4f})</p>",
        "<div class=figs>" + _img(plots.sweep_heatmap_png(m["grid"]), f"{name} sweep heatmap"),
    ]
    best = grid[grid["min_size"] == m["best_min_size"]].sort_values("threshold")
    parts.append(
        _img(
            plots.f1_curves_png({f"min size {m['best_min_size']}": best.to_dict("list")}, "probability threshold", "F1 over threshold"),
            f"{name} F1 over threshold",
        )
        + "</div>"
    )
    parts.append(f"<details><summary>all {len(grid)} settings</summary>{_table_html(grid, 1000)}</details>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- images


def _choose_level(path: Path, group: str | None = None, max_plane: int = MAX_PLANE):
    """The finest pyramid level whose largest axis is at most ``max_plane`` (else the coarsest)."""
    from deepict_dask.io import open_volume

    chosen = None
    for level in range(12):
        try:
            vol = open_volume(path, level=level, group=group)
        except DeepictError:
            break
        chosen = (level, vol)
        if max(vol.shape[-3:]) <= max_plane:
            break
    if chosen is None:
        raise InputError("cannot read an image from this store", path)
    return chosen


def _planes(arr: Any, centre: tuple[int, int, int], half: int) -> dict[str, np.ndarray]:
    """Slab-averaged xy, xz, yz planes through ``centre`` (each ``2 half + 1`` voxels thick)."""
    cz, cy, cx = centre
    nz, ny, nx = arr.shape

    def sl(c: int, n: int) -> slice:
        return slice(max(0, c - half), min(n, c + half + 1))

    import dask

    xy, xz, yz = dask.compute(arr[sl(cz, nz)].mean(axis=0), arr[:, sl(cy, ny)].mean(axis=1), arr[:, :, sl(cx, nx)].mean(axis=2))
    return {"xy": np.asarray(xy, float), "xz": np.asarray(xz, float), "yz": np.asarray(yz, float)}


def _sub_images(path: Path) -> list[tuple[str, str]]:
    """(kind, group path) of the prediction and label images inside an OME-Zarr store."""
    from deepict_dask.layout import TomoStore

    return TomoStore(path).sub_images()


def orthoslice_figure(
    path: Path,
    picks: pd.DataFrame | None,
    truth: pd.DataFrame | None,
    tolerance: float | None,
    unit: str,
) -> bytes:
    """Orthoslices of an OME-Zarr tomogram with picks (TP/FP/FN when truth and tolerance) and contours."""
    from deepict_dask.evaluate import plots
    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.io import open_volume
    from deepict_dask.io.volume import origin_of, voxel_size_of
    from deepict_dask.pick.threshold import probability_scale

    level, vol = _choose_level(path)
    arr = vol.data if vol.ndim == 3 else vol.data[0]
    vs = voxel_size_of(vol)
    org = origin_of(vol)
    shape = arr.shape
    centre = tuple(n // 2 for n in shape)
    planes = _planes(arr, centre, half=1)
    contours: dict[str, dict[str, np.ndarray]] = {}
    for kind, group in _sub_images(path):
        try:
            sub = open_volume(path, level=level, group=group)
        except DeepictError as exc:
            log.warning("report: skipping %s/%s: %s", path, group, exc)
            continue
        if tuple(sub.shape[-3:]) != tuple(shape):
            continue
        channels = [(str(c), sub.data[i]) for i, c in enumerate(sub["c"].values)] if sub.ndim == 4 else [(group.split("/", 1)[1], sub.data)]
        for cname, data in channels:
            pl = _planes(data, centre, half=0)
            if kind == PREDICTIONS:
                scale = probability_scale(data.dtype, dict(sub.attrs))
                pl = {k: (v / scale >= 0.5).astype(float) for k, v in pl.items()}
            else:
                pl = {k: (v > 0).astype(float) for k, v in pl.items()}
            contours[f"{kind[:-1]} {cname}"] = pl

    points = []
    if picks is not None and len(picks):
        p = picks.copy()
        if truth is not None and tolerance:
            try:
                ev = evaluate_picks(picks, truth, tolerance, unit=unit, by_class=None, curve_points=0)
                p = ev.pred
                fn = ev.truth[ev.truth["status"] == "FN"].copy()
                points.append(fn)
            except DeepictError as exc:
                log.warning("report: cannot match picks of %s: %s", path, exc)
                p["status"] = "pick"
        else:
            p["status"] = "pick"
        points.append(p)
    elif truth is not None and len(truth):
        t = truth.copy()
        t["status"] = "FN" if tolerance else "truth"
        points.append(t)
    pts = None
    if points:
        pts = pd.concat(points, ignore_index=True)
        vz, vy, vx = vs
        oz, oy, ox = org
        x = (pts["x_A"].to_numpy(float) - ox) / vx
        y = (pts["y_A"].to_numpy(float) - oy) / vy
        z = (pts["z_A"].to_numpy(float) - oz) / vz
        slab = [max(3.0, 0.05 * n) for n in shape]  # z, y, x half-thickness for showing a point
        near_z = np.abs(z - centre[0]) <= slab[0]
        near_y = np.abs(y - centre[1]) <= slab[1]
        near_x = np.abs(x - centre[2]) <= slab[2]
        pts = pd.DataFrame(
            {
                "status": pts["status"].astype(str).to_numpy(),
                "xy_u": np.where(near_z, x, np.nan),
                "xy_v": np.where(near_z, y, np.nan),
                "xz_u": np.where(near_y, x, np.nan),
                "xz_v": np.where(near_y, z, np.nan),
                "yz_u": np.where(near_x, y, np.nan),
                "yz_v": np.where(near_x, z, np.nan),
            }
        )
    title = f"{tomogram_name(path)} (level {level}, {shape[2]}x{shape[1]}x{shape[0]} voxels of {vs[2]:g} A)"
    return plots.orthoslices_png(planes, pts, contours, title=title, aspect=vs)


# ---------------------------------------------------------------------------------------------- tables


def _read_any_table(path: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str | None]:
    """(particle table, plain table, problem) for a CSV/STAR file."""
    from deepict_dask.evaluate.files import load_table

    try:
        return load_table(path), None, None
    except DeepictError as exc:
        if path.suffix.lower() == ".csv":
            try:
                return None, pd.read_csv(path), None
            except (ValueError, OSError, UnicodeDecodeError) as exc2:
                return None, None, str(exc2)
        return None, None, exc.problem


def _particle_summary(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["tomo", "class"], sort=True)
    out = g.size().rename("particles").reset_index()
    if "score" in df.columns:
        out["mean score"] = g["score"].mean().to_numpy()
    if "size" in df.columns:
        out["median size"] = g["size"].median().to_numpy()
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1280px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
h3{margin-bottom:.3em}table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.t th,table.t td{padding:.2em .6em;border-bottom:1px solid #e4e4e4;text-align:right}
table.t th:first-child,table.t td:first-child{text-align:left}table.t thead th{background:#f3f3f3}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}img{max-width:100%;height:auto}
.note{color:#666;font-size:.85em}code,pre{background:#f6f6f6;font-size:.85em}pre{padding:.6em;overflow:auto}
nav a{margin-right:1em}
"""


def _rel(path: Path, root: Path) -> str:
    """``path`` as shown in the report: relative to the run directory where it lies inside it."""
    p, r = Path(path).resolve(), root.resolve()
    return p.relative_to(r).as_posix() if p.is_relative_to(r) else str(path)


def build_report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    truth: list[str | os.PathLike] | None = None,
    tolerance: float | None = None,
    unit: str | None = None,
    title: str | None = None,
    max_images: int = 20,
    files: RunFiles | None = None,
) -> Path:
    """Write ``out`` (default ``RUN_DIR/report.html``): one self-contained HTML page of the run.

    Parameters
    ----------
    run_dir
        The folder reported on (paths are shown relative to it).
    out
        The HTML file to write (atomically).
    truth
        Ground-truth tables besides those found in ``run_dir``.
    tolerance, unit
        Matching radius for colouring picks TP/FP/FN (default: from a picks metrics file) and its
        unit (``vox`` or ``A``).
    title
        Page title.
    max_images
        At most this many tomograms get orthoslices.
    files
        The inputs by role, when the caller knows them (``deepict run`` records them in its
        manifest); without, :func:`discover` searches ``run_dir`` and tells truth by its name.

    Returns
    -------
    Path
        ``out``.
    """
    from deepict_dask import __version__
    from deepict_dask.evaluate import plots
    from deepict_dask.io.atomic import atomic_path

    root = Path(run_dir)
    if files is None:
        files = discover(root, truth)
    elif truth:
        files.truth = [*files.truth, *(Path(t) for t in truth)]
    out = Path(out) if out is not None else RunLayout(root).report
    if tolerance is None:
        for _, kind, m in files.metrics:
            if kind == "picks" and m.get("tolerance"):
                tolerance, unit = float(m["tolerance"]), unit or m.get("unit", "vox")
                break
    unit = unit or "vox"
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)

    # metrics
    for path, kind, m in files.metrics:
        rel = _rel(path, root)
        body = {"picks": _picks_section, "masks": _masks_section, "sweep": _sweep_section}[kind](rel, m)
        sections.append((f"m{len(sections)}", f"{kind.capitalize()} metrics: {rel}", body))

    # tables
    particles: list[pd.DataFrame] = []
    table_parts: list[str] = []
    for path in files.tables:
        rel = _rel(path, root)
        df, plain, problem = _read_any_table(path)
        if df is not None:
            particles.append(df)
            table_parts.append(f"<h3>{html.escape(rel)}</h3>" + _table_html(_particle_summary(df)) if len(df) else
                               f"<h3>{html.escape(rel)}</h3><p class=note>no particles</p>")
        elif plain is not None:
            table_parts.append(f"<h3>{html.escape(rel)}</h3>" + _table_html(plain))
        else:
            table_parts.append(f"<h3>{html.escape(rel)}</h3><p class=note>not readable: {html.escape(str(problem))}</p>")
    truth_frames = []
    for path in files.truth:
        path = Path(path)
        path = path.relative_to(root) if path.is_relative_to(root) else path
        df, _, problem = _read_any_table(root / path if not path.is_absolute() else path)
        if df is not None:
            truth_frames.append(df)
            table_parts.append(f"<h3>truth: {html.escape(str(path))}</h3>" + _table_html(_particle_summary(df)))
        else:
            table_parts.append(f"<h3>truth: {html.escape(str(path))}</h3><p class=note>not readable: {html.escape(str(problem))}</p>")
    all_picks = pd.concat(particles, ignore_index=True) if particles else None
    all_truth = pd.concat(truth_frames, ignore_index=True) if truth_frames else None

    # images
    img_parts = []
    for path in files.images[:max_images]:
        name = tomogram_name(path)
        picks = all_picks[all_picks["tomo"] == name] if all_picks is not None else None
        tr = all_truth[all_truth["tomo"] == name] if all_truth is not None else None
        try:
            png = orthoslice_figure(path, picks, tr if tr is not None and len(tr) else None, tolerance, unit)
            img_parts.append(f"<h3>{html.escape(name)}</h3>" + _img(png, f"orthoslices of {name}"))
        except DeepictError as exc:
            img_parts.append(f"<h3>{html.escape(name)}</h3><p class=note>cannot show: {html.escape(str(exc))}</p>")
    if len(files.images) > max_images:
        img_parts.append(f"<p class=note>{len(files.images) - max_images} more tomograms not shown</p>")
    if img_parts:
        legend = (
            "<p class=note>Slab-averaged central orthoslices. Circles: picks within 5 % of the axis length of the "
            "slice; green TP, orange FP, blue FN (missed truth), yellow redundant; contours: segmentations.</p>"
        )
        sections.append(("tomograms", "Tomograms", legend + "".join(img_parts)))

    # spectra
    spectra = {}
    for path in files.spectra:
        try:
            df = pd.read_csv(path, sep="\t", comment="#")
            if df.shape[1] >= 2 and all(np.issubdtype(t, np.number) for t in df.dtypes):
                spectra[path.relative_to(root).as_posix()] = df
        except (ValueError, OSError, UnicodeDecodeError):
            continue
    if spectra:
        sections.append(("spectra", "Spectra", _img(plots.spectra_png(spectra), "amplitude spectra")))
    if table_parts:
        sections.append(("tables", "Tables", "".join(table_parts)))
    if files.configs:
        cfg = "".join(
            f"<details><summary>{html.escape(p.relative_to(root).as_posix())}</summary><pre>"
            f"{html.escape(p.read_text(errors='replace')[:100_000])}</pre></details>"
            for p in files.configs
        )
        sections.append(("config", "Configuration", cfg))

    title = title or f"deepict report: {root.resolve().name}"
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{html.escape(h)}</h2>{b}</section>' for a, h, b in sections)
    if not sections:
        body = "<p>Nothing to report: no metrics, tables, spectra or images were found.</p>"
    page = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=note>{html.escape(str(root.resolve()))} &middot; {now} &middot; "
        f"deepict-dask {html.escape(__version__)}</p><nav>{nav}</nav>{body}</body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
