"""Run-level outputs: per-tomogram summary and provenance, then the run-level stages.

The combined tables, the evaluation and the report are engine stages of the run itself (see
:mod:`deepict_dask.pipeline.run_stages`), recomputed only when what they are made from changed, so
re-running a finished run costs little more than reading the manifests.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from deepict_dask.io.atomic import atomic_path
from deepict_dask.layout import RUN_RECORD, RunLayout
from deepict_dask.pipeline.config import RunConfig
from deepict_dask.pipeline.manifest import Manifest, TomoManifest
from deepict_dask.pipeline.run_stages import write_json

if TYPE_CHECKING:
    from deepict_dask.pipeline.inputs import InputTomogram
    from deepict_dask.pipeline.run import RunResult

PACKAGES = ("deepict-dask", "dask", "distributed", "numpy", "scipy", "zarr", "ome-zarr", "xarray", "torch",
            "pandas", "pydantic", "connected-components-3d", "scikit-image")


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


def write_run_outputs(
    result: RunResult,
    config: RunConfig,
    tomos: list[InputTomogram],
    manifest: Manifest,
    model_hashes: Mapping[str, str],
    *,
    evaluate: bool = True,
    force: Iterable[str] = (),
    verify: bool = False,
    records: Mapping[str, TomoManifest] | None = None,
) -> None:
    """Write the summary and provenance, then run the run-level stages; fills ``result.outputs``.

    The summary and provenance say what happened in this invocation, so they are always rewritten;
    ``combine``, ``evaluate`` and ``report`` are engine stages (skipped when nothing changed).
    """
    import pandas as pd

    from deepict_dask.pipeline.engine import plan_job, run_here
    from deepict_dask.pipeline.run_stages import build_run_stages, run_job, run_table_paths

    layout = RunLayout(result.run_dir)
    known = records or {}
    records = {t.name: known[t.name] if t.name in known else manifest.load(t.name) for t in tomos}
    rows = summary_rows(result, records)
    with atomic_path(layout.summary) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_json(provenance(config, model_hashes), layout.provenance)

    done = [n for n, o in result.outcomes.items() if o.status == "done"]
    stages = build_run_stages(config, layout, tomos, done, records, rows, evaluate=evaluate)
    job = run_job(layout.root)
    plans = plan_job(job, stages, manifest.load(RUN_RECORD), force, verify=verify)
    result.run_stages = run_here(job, plans, manifest)

    names = {st.name for st in stages}
    outputs = result.outputs
    outputs["summary"] = layout.summary
    outputs.update({f"particles_{k}": v for k, v in run_table_paths(layout, config.output.table_formats).items()})
    outputs["provenance"] = layout.provenance
    if "evaluate" in names and layout.evaluation.exists():
        result.evaluation = json.loads(layout.evaluation.read_text())
        outputs["evaluation"] = layout.evaluation
    if "report" in names:
        outputs["report"] = layout.report


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
