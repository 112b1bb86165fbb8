"""Run-level outputs: combined particle tables, per-tomogram summary, provenance, evaluation, report.

Each is recomputed only when what it is made from changed (a hash kept in the run's own manifest
record), so re-running a finished run costs little more than reading the manifests.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepict_dask.io.atomic import atomic_path
from deepict_dask.pipeline.config import RunConfig
from deepict_dask.pipeline.manifest import Manifest, TomoManifest, file_fingerprint, hash_value, output_exists

if TYPE_CHECKING:
    from deepict_dask.pipeline.inputs import InputTomogram
    from deepict_dask.pipeline.run import RunResult

RUN_RECORD = ".run"
PACKAGES = ("deepict-dask", "dask", "distributed", "numpy", "scipy", "zarr", "ome-zarr", "xarray", "torch",
            "pandas", "pydantic", "connected-components-3d", "scikit-image")


def write_json(data: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    return path


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def summary_rows(result: RunResult, records: Mapping[str, TomoManifest]) -> list[dict[str, Any]]:
    """One row per tomogram: status, failure reason, counts per class, seconds per stage."""
    rows = []
    for name, out in result.outcomes.items():
        rec = records.get(name)
        row: dict[str, Any] = {"tomo": name, "status": out.status, "failed_stage": out.failed_stage or "",
                               "reason": out.reason or ""}
        if rec is not None:
            tables = rec.stages.get("tables")
            if tables is not None and out.status == "done":
                for cls, n in tables.result.get("counts", {}).items():
                    row[f"n_{cls}"] = n
            for stage, srec in rec.stages.items():
                row[f"s_{stage}"] = round(srec.seconds, 3)
            row["seconds_total"] = round(sum(s.seconds for s in rec.stages.values()), 3)
            row["ran_this_time"] = ",".join(out.ran)
        rows.append(row)
    return rows


def _table_paths(records: Mapping[str, TomoManifest], result: RunResult, config: RunConfig) -> list[Path]:
    """The particle tables of the tomograms whose tables stage finished: each target's picks, in the
    order of the tomograms and targets (whatever formats ``output.table_formats`` asks for)."""
    targets = [t.name for t in config.targets if t.kind == "particles"]
    paths = []
    for name, out in result.outcomes.items():
        rec = records.get(name)
        if out.status != "done" or rec is None or "tables" not in rec.stages:
            continue
        picks = [Path(rec.stages[f"pick:{t}"].outputs[0]) for t in targets if f"pick:{t}" in rec.stages]
        paths += [p for p in picks if p.exists()]
    return paths


def run_table_paths(run_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Where the run-wide table goes in each format: ``particles.csv`` always (the evaluation and report
    read it), then each requested format that records the tomogram of each particle
    (``particles<suffix>``, a directory format ``particles_<name>/``); one-tomogram formats are left out."""
    from deepict_dask.io.tables import get_format

    out = {"csv": run_dir / "particles.csv"}
    for name in formats:
        fmt = get_format(name)
        if name in out or not fmt.many_tomograms:
            continue
        out[name] = run_dir / (f"particles_{name}" if fmt.directory else f"particles{fmt.suffixes[0]}")
    return out


def write_run_outputs(
    result: RunResult,
    config: RunConfig,
    tomos: list[InputTomogram],
    manifest: Manifest,
    model_hashes: Mapping[str, str],
    *,
    evaluate: bool = True,
) -> None:
    """Write everything of the run as a whole into ``result.outputs``."""
    import pandas as pd

    from deepict_dask.io.tables import TableContext, concat_tables, read_table, write_table

    run_dir = result.run_dir
    records = {t.name: manifest.load(t.name) for t in tomos}
    run_rec = manifest.load(RUN_RECORD)
    outputs = result.outputs

    # summary: always rewritten (it says what happened in this invocation)
    rows = summary_rows(result, records)
    summary_csv = run_dir / "summary.csv"
    with atomic_path(summary_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    outputs["summary"] = summary_csv

    # combined tables
    table_paths = _table_paths(records, result, config)
    fps = [file_fingerprint(p) for p in table_paths]
    combined = run_table_paths(run_dir, config.output.table_formats)
    # each tomogram's shape gives the run-wide STAR the RELION 5 centred columns the per-tomogram ones have
    shapes = {t.name: list(t.header["shape"]) for t in tomos if t.header and t.header.get("shape")}
    ts_pixel = config.output.tilt_series_pixel_size
    key = hash_value({"tables": fps, "formats": list(combined), "shapes": shapes, "ts_pixel": ts_pixel})
    if _stale(run_rec, "combine", key):
        df = concat_tables(read_table(p) for p in table_paths)
        vs = next((t.header.get("voxel_size") for t in tomos if t.header), None)
        ctx = TableContext(voxel_size=vs, shapes=shapes, tilt_series_pixel_size=ts_pixel)
        for name, path in combined.items():
            write_table(df, path, fmt=name, context=ctx)
        _record(manifest, run_rec, "combine", key, list(combined.values()))
    outputs.update({f"particles_{k}": v for k, v in combined.items()})

    # provenance
    prov = run_dir / "provenance.json"
    write_json(provenance(config, model_hashes), prov)
    outputs["provenance"] = prov

    # evaluation against ground truth, where given
    truths = {t.name: t.truth for t in tomos if t.truth is not None and t.truth.exists()}
    if evaluate and truths and any(t.kind == "particles" for t in config.targets):
        ev_path = run_dir / "evaluation.json"
        key = hash_value({"pred": file_fingerprint(combined["csv"]),
                          "truth": [file_fingerprint(p) for p in truths.values()],
                          "eval": config.evaluation.model_dump(),
                          "done": sorted(n for n, o in result.outcomes.items() if o.status == "done")})
        if _stale(run_rec, "evaluate", key):
            metrics = evaluate_run(config, combined["csv"], truths, result)
            write_json(metrics, ev_path)
            _record(manifest, run_rec, "evaluate", key, [ev_path])
        result.evaluation = json.loads(ev_path.read_text())
        outputs["evaluation"] = ev_path

    if config.output.report:
        outputs["report"] = make_report(run_dir, manifest, run_rec, rows, truths, config)


def _stale(run_rec: TomoManifest, name: str, key: str) -> bool:
    rec = run_rec.stages.get(name)
    return rec is None or not rec.valid_for(key)


def _record(manifest: Manifest, run_rec: TomoManifest, name: str, key: str, outputs: list[Path]) -> None:
    manifest.record(run_rec, name, key, {"outputs": outputs})


def provenance(config: RunConfig, model_hashes: Mapping[str, str]) -> dict[str, Any]:
    """What produced the outputs: config, software versions, model files and their hashes."""
    from deepict_dask.pipeline.stages import model_files, read_model_meta

    files = model_files(config)
    models = {}
    for m in config.models:
        info = dict(read_model_meta(files[m.name]))
        info.pop("training", None)
        models[m.name] = {"path": str(files[m.name]), "sha256": model_hashes.get(m.name), "info": info}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "models": models,
        "config": config.model_dump(mode="json", by_alias=True),
    }


def evaluate_run(config: RunConfig, pred_csv: Path, truths: Mapping[str, Path], result: RunResult) -> dict[str, Any]:
    """Picking metrics per target class, pooled over the tomograms that finished and have truth."""
    import pandas as pd

    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.io.coords import read_table

    done = [n for n in truths if result.outcomes.get(n) and result.outcomes[n].status == "done"]
    pred = read_table(pred_csv)
    pred = pred[pred["tomo"].isin(done)]
    truth = pd.concat([read_table(truths[n]).assign(tomo=n) for n in done], ignore_index=True) if done else None
    classes = [t.name for t in config.targets if t.kind == "particles"]
    out: dict[str, Any] = {"tomograms": done, "tolerance": config.evaluation.tolerance,
                           "unit": config.evaluation.unit, "per_class": {}}
    if truth is None:
        return out
    truth = truth[truth["class"].isin(classes)]
    ev = evaluate_picks(pred, truth, config.evaluation.tolerance, unit="vox" if config.evaluation.unit == "vox" else "A",
                        tomograms="truth", by_class=True)
    out.update(ev.metrics)
    if ev.notes:
        out["notes"] = list(ev.notes)
    return out


def make_report(
    run_dir: Path, manifest: Manifest, run_rec: TomoManifest, rows: list[dict[str, Any]],
    truths: Mapping[str, Path], config: RunConfig,
) -> Path:
    """The evaluation package's self-contained HTML report of the run (rebuilt only when inputs changed)."""
    from deepict_dask.evaluate.report import build_report

    path = run_dir / "report.html"
    inputs = [p for p in (run_dir / "particles.csv", run_dir / "evaluation.json") if p.exists()]
    stable_rows = [{k: v for k, v in r.items() if k != "ran_this_time"} for r in rows]
    key = hash_value({"inputs": [file_fingerprint(p) for p in inputs], "rows": stable_rows,
                      "truth": sorted(str(p) for p in truths.values())})
    if _stale(run_rec, "report", key) or not output_exists(path):
        build_report(run_dir, path, truth=list(truths.values()) or None,
                     tolerance=config.evaluation.tolerance if truths else None,
                     unit=("vox" if config.evaluation.unit == "vox" else "A") if truths else None,
                     title=f"deepict run: {run_dir.name}")
        _record(manifest, run_rec, "report", key, [path])
    return path
