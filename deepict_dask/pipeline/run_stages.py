"""The run-level stages, after every tomogram: combine -> evaluate -> report.

They are ordinary engine stages of one job, the run itself (manifest record ``.run``): hashed on
their parameters, skipped when nothing changed and their outputs are intact, recomputed with
``--force combine|evaluate|report`` or when an output is missing. Their parameters name
every input file (taken from the tomograms' manifest records and ``inputs.truth``), so the report
does not guess which files are ground truth.

* ``combine``: every finished tomogram's picks -> ``particles.csv`` and the run-wide table in each
  other format of ``output.table_formats`` that can hold many tomograms (:func:`run_table_paths`);
* ``evaluate``: the combined picks against the truth tables -> ``evaluation.json`` (only with truth
  and particle targets);
* ``report``: ``report.html`` from the files the other stages recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepict_dask.io.atomic import atomic_path
from deepict_dask.layout import RUN_RECORD, RunLayout
from deepict_dask.pipeline.config import RunConfig
from deepict_dask.pipeline.engine import Stage, TomoJob
from deepict_dask.pipeline.manifest import TomoManifest, file_fingerprint

if TYPE_CHECKING:
    from deepict_dask.pipeline.inputs import InputTomogram

RUN_STAGE_KINDS = ("combine", "evaluate", "report")
VERSIONS = {"combine": "1", "evaluate": "1", "report": "1"}
COMBINED_FORMATS = ("csv", "star")  # the run-wide tables the report shows


def run_table_paths(layout: RunLayout, formats: Sequence[str]) -> dict[str, Path]:
    """Where the run-wide table goes in each format.

    ``particles.csv`` always (the evaluation and the report read it), then each requested format
    that records the tomogram of each particle (``particles<suffix>``; a directory format
    ``particles_<name>/``); formats holding one tomogram per file are per-tomogram only.
    """
    from deepict_dask.io.tables import get_format

    out = {"csv": layout.particles("csv")}
    for name in formats:
        fmt = get_format(name)
        if name in out or not fmt.many_tomograms:
            continue
        out[name] = layout.root / (f"particles_{name}" if fmt.directory else f"particles{fmt.suffixes[0]}")
    return out


def write_json(data: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    return path


# ------------------------------------------------------------------------------------- stage bodies


def run_combine(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Every finished tomogram's picks in one table per format (each table read once)."""
    from deepict_dask.io.tables import TableContext, concat_tables, read_table, write_table

    df = concat_tables(read_table(Path(t["path"])) for t in params["tables"])
    ctx = TableContext(voxel_size=params["voxel_size"], shapes=params["shapes"],
                       tilt_series_pixel_size=params["tilt_series_pixel_size"])
    outputs = [write_table(df, Path(path), fmt=name, context=ctx) for name, path in params["formats"].items()]
    return {"outputs": outputs,
            "result": {"count": len(df), "tomograms": sorted({t["tomo"] for t in params["tables"]})}}


def run_evaluate(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Picking metrics per target class, pooled over the finished tomograms that have truth."""
    import pandas as pd

    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.io.tables import read_table

    truths = params["truth"]
    done = [n for n in truths if n in set(params["done"])]
    pred = read_table(job.layout.particles("csv"))
    pred = pred[pred["tomo"].isin(done)]
    out: dict[str, Any] = {"tomograms": done, "tolerance": params["tolerance"], "unit": params["unit"],
                           "per_class": {}}
    if done:
        truth = pd.concat([read_table(Path(truths[n]["path"])).assign(tomo=n) for n in done], ignore_index=True)
        truth = truth[truth["class"].isin(params["classes"])]
        ev = evaluate_picks(pred, truth, params["tolerance"], unit="vox" if params["unit"] == "vox" else "A",
                            tomograms="truth", by_class=True)
        out.update(ev.metrics)
        if ev.notes:
            out["notes"] = list(ev.notes)
    path = write_json(out, job.layout.evaluation)
    return {"outputs": [path], "result": {k: out[k] for k in ("f1", "precision", "recall") if k in out}}


def run_report(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """``report.html`` from the files the run recorded (no search of the folder, no guessing)."""
    from deepict_dask.evaluate.report import build_report

    files = report_inputs(job.layout, params["tables"], params["truth"], params["stores"])
    path = build_report(job.layout.root, job.layout.report, files=files, tolerance=params["tolerance"],
                        unit=params["unit"], title=params["title"])
    return {"outputs": [path], "result": {"truth": params["truth"], "tables": params["tables"],
                                          "stores": params["stores"]}}


def report_inputs(layout: RunLayout, tables: Sequence[str], truth: Sequence[str], stores: Sequence[str]) -> Any:
    """The report's inputs, by role, from what the run recorded (see :class:`~deepict_dask.evaluate.report.RunFiles`)."""
    from deepict_dask.evaluate.report import RunFiles, metrics_kind

    files = RunFiles()
    if layout.evaluation.exists():
        data = json.loads(layout.evaluation.read_text())
        kind = metrics_kind(data)
        if kind:
            files.metrics.append((layout.evaluation, kind, data))
    run_wide = [layout.particles(f) for f in COMBINED_FORMATS] + [layout.summary]
    files.tables = [p for p in run_wide if p.exists()] + [Path(p) for p in tables if Path(p).exists()]
    files.truth = [Path(p) for p in truth]
    files.images = [Path(p) for p in stores if Path(p).exists()]
    return files


def recorded_report_inputs(run_dir: str | Path) -> Any | None:
    """The inputs the last ``deepict run`` gave its report (None when the folder has no such record)."""
    from deepict_dask.pipeline.manifest import Manifest

    layout = RunLayout(run_dir)
    rec = Manifest(layout.root).load(RUN_RECORD).stages.get("report")
    if rec is None or not {"tables", "truth", "stores"} <= set(rec.result):
        return None
    return report_inputs(layout, rec.result["tables"], rec.result["truth"], rec.result["stores"])


# ----------------------------------------------------------------------------------------- the job


def run_job(run_dir: Path) -> TomoJob:
    """The run itself as an engine job (its record is ``manifest/.run.json``)."""
    return TomoJob(RUN_RECORD, "", str(run_dir))


def build_run_stages(
    config: RunConfig,
    layout: RunLayout,
    tomos: Sequence[InputTomogram],
    done: Sequence[str],
    records: Mapping[str, TomoManifest],
    rows: Sequence[Mapping[str, Any]],
    *,
    evaluate: bool = True,
) -> list[Stage]:
    """The run-level stages for this invocation: what they read is in their parameters (and hash).

    Parameters
    ----------
    config
        The run configuration.
    layout
        The run directory.
    tomos
        Every input tomogram (readable or not).
    done
        The tomograms that finished: only their tables are combined and evaluated.
    records
        Their manifest records (which name the table files and the stages' hashes).
    rows
        The summary rows (the report shows them; the invocation's own ``ran_this_time`` is left out).
    evaluate
        Whether to evaluate against ``inputs.truth``.

    Returns
    -------
    list of Stage
        ``combine``, then ``evaluate`` where there is truth, then ``report`` if ``output.report``.
    """
    done_set = set(done)
    targets = [t.name for t in config.targets if t.kind == "particles"]
    tables = []  # each target's picks (CSV), whatever formats the tomograms' tables were written in
    per_tomo_tables: list[str] = []
    for t in tomos:
        rec = records.get(t.name)
        if rec is None or t.name not in done_set or "tables" not in rec.stages:
            continue
        picks = [rec.stages[f"pick:{n}"].outputs[0] for n in targets if f"pick:{n}" in rec.stages]
        tables += [{"tomo": t.name, "path": p, "file": file_fingerprint(p)} for p in picks if Path(p).exists()]
        for stage in sorted(rec.stages):
            if stage.startswith("pick:") or stage == "tables":
                per_tomo_tables += [p for p in rec.stages[stage].outputs if p.endswith((".csv", ".star"))]
    shapes = {t.name: list(t.header["shape"]) for t in tomos if t.header and t.header.get("shape")}
    voxel_size = next((t.header.get("voxel_size") for t in tomos if t.header), None)
    formats = {name: str(path) for name, path in run_table_paths(layout, config.output.table_formats).items()}
    combine = {"tables": tables, "formats": formats, "shapes": shapes, "voxel_size": voxel_size,
               "tilt_series_pixel_size": config.output.tilt_series_pixel_size}
    stages = [Stage("combine", run_combine, combine, version=VERSIONS["combine"])]

    truths = {t.name: t.truth for t in tomos if t.truth is not None and t.truth.exists()}
    ev = config.evaluation
    unit = "vox" if ev.unit == "vox" else "A"
    evaluated = evaluate and bool(truths) and any(t.kind == "particles" for t in config.targets)
    if evaluated:
        params = {"truth": {n: {"path": str(p), "file": file_fingerprint(p)} for n, p in truths.items()},
                  "done": sorted(done_set), "classes": [t.name for t in config.targets if t.kind == "particles"],
                  "tolerance": ev.tolerance, "unit": ev.unit}
        stages.append(Stage("evaluate", run_evaluate, params, deps=("combine",), version=VERSIONS["evaluate"]))
    if config.output.report:
        stable_rows = [{k: v for k, v in r.items() if k != "ran_this_time"} for r in rows]
        params = {"rows": stable_rows, "tables": sorted(per_tomo_tables, key=_walk_order),
                  "truth": [str(p) for p in truths.values()],
                  "truth_files": [file_fingerprint(p) for p in truths.values()],
                  "stores": sorted(str(layout.store(n).path) for n in done_set if layout.store(n).path.exists()),
                  "tolerance": ev.tolerance if truths else None, "unit": unit if truths else None,
                  "title": f"deepict run: {layout.root.name}"}
        deps = ("combine", "evaluate") if evaluated else ("combine",)
        stages.append(Stage("report", run_report, params, deps=deps, version=VERSIONS["report"]))
    return stages


def _walk_order(path: str) -> tuple[str, ...]:
    """Folder by folder, as a directory walk lists them (the report's order before it had the manifest)."""
    return Path(path).parts
