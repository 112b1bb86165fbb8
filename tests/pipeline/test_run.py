"""``deepict run`` end to end with the real stages, on tiny volumes and tiny (untrained) models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.pipeline.config import load_config
from deepict_dask.pipeline.manifest import Manifest
from deepict_dask.pipeline.run import run_workflow
from tests.helpers import mrc_file
from tests.pipeline.project import make_project, stages_ran


def test_workflow_runs_resumes_and_recomputes_only_what_changed(tmp_path, tiny_models, client):
    cfg_path = make_project(tmp_path, tiny_models, particles=True)
    config = load_config(cfg_path)
    first = run_workflow(config, client=client)
    assert first.exit_code == 0, {n: o.reason for n, o in first.outcomes.items()}
    run = tmp_path / "run"
    store = run / "tomograms" / "t0.ome.zarr"
    for group in ("0", "filtered", "predictions/tiny2d", "predictions/tiny3d", "labels/cytosol", "labels/membrane"):
        assert (store / group).is_dir(), group
    for name in ("summary.csv", "particles.csv", "particles.star", "provenance.json", "report.html"):
        assert (run / name).is_file(), name
    # the run-wide STAR carries RELION 5's centred columns like the per-tomogram ones (issue 17)
    assert "_rlnCenteredCoordinateXAngst" in (run / "particles.star").read_text()
    assert "# rlnTomoTiltSeriesPixelSize assumed equal to the tomogram voxel size" in (run / "particles.star").read_text()
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["models"]["m3"]["sha256"] and prov["packages"]["dask"]
    assert prov["config"]["targets"][0]["name"] == "cytosol"
    summary = pd.read_csv(run / "summary.csv")
    assert list(summary["status"]) == ["done"] * 3 and "s_predict:m3" in summary.columns
    rec = Manifest(run).load("t1")
    assert {"convert", "preprocess", "predict:m2", "predict:m3", "pick:cytosol", "tables"} <= set(rec.stages)
    mask_before = (store / "labels" / "membrane").stat().st_mtime_ns
    # the segmentation mask reads back as the region it is (a context mask for picking), not as a map
    from deepict_dask.pick.api import open_map
    from deepict_dask.pick.context import binary_mask

    region = binary_mask(open_map(store, group="labels/cytosol"), open_map(store / "predictions" / "tiny3d"))
    assert float(region.mean().compute()) == pytest.approx(rec.stages["pick:cytosol"].result["fraction"])

    again = run_workflow(config, client=client)
    assert all(r == [] for r in stages_ran(again).values())

    # a changed cytosol threshold recomputes that mask and what uses it, nothing upstream
    config2 = load_config(make_project(tmp_path, tiny_models, particles=True, cyto_threshold=0.6))
    third = run_workflow(config2, client=client)
    expected = ["pick:cytosol", "pick:ribosome", "tables"]
    assert stages_ran(third) == {f"t{i}": sorted(expected) for i in range(3)}
    assert (store / "labels" / "membrane").stat().st_mtime_ns == mask_before

    forced = run_workflow(config2, client=client, force=["predict:m3"])
    assert "predict:m3" in forced.outcomes["t2"].ran and "predict:m2" not in forced.outcomes["t2"].ran


def test_corrupt_tomogram_is_reported_and_others_finish(tmp_path, tiny_models, client, capsys):
    cfg_path = make_project(tmp_path, tiny_models, n=2)
    (tmp_path / "tomos" / "t9.mrc").write_bytes(b"\0" * 1024 + b"short")  # header without data
    mrc_file(tmp_path / "tomos" / "t5.mrc", np.full((20, 32, 32), np.nan, np.float32))  # readable header, NaN data
    result = run_workflow(load_config(cfg_path), client=client)
    assert result.exit_code == 1
    status = {n: o.status for n, o in result.outcomes.items()}
    assert status == {"t0": "done", "t1": "done", "t5": "failed", "t9": "failed"}
    assert "t5.mrc" in result.outcomes["t5"].reason or "NaN" in result.outcomes["t5"].reason
    summary = pd.read_csv(tmp_path / "run" / "summary.csv").set_index("tomo")
    assert summary.loc["t5", "status"] == "failed" and summary.loc["t5", "failed_stage"]
    from rich.console import Console

    from deepict_dask.pipeline.progress import print_outcome

    print_outcome(result, Console(width=200))
    out = capsys.readouterr().out
    assert "2 tomogram(s) failed" in out and "t9" in out and "t5" in out


def test_cli_run_and_rerun_exit_codes(tmp_path, tiny_models, client, capsys):
    cfg_path = make_project(tmp_path, tiny_models, n=1)
    args = ["run", str(cfg_path), "--scheduler", client.scheduler.address, "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 of 1 tomograms done (1 computed" in out and "report" in out
    assert main(args) == 0
    assert "0 computed, 1 already up to date" in capsys.readouterr().out
    assert main(["run", str(cfg_path), "--dry-run", "--force", "pick"]) == 0
    out = capsys.readouterr().out
    assert "pick:cytosol (forced)" in out
    assert "run-level stages: combine (after tomograms), report (after tomograms)" in out
    assert main(["run", str(cfg_path), "--dry-run"]) == 0  # planned exactly: what the rerun above skipped
    assert "run-level stages: up to date" in capsys.readouterr().out
    assert main(["run", str(cfg_path), "--dry-run", "--force", "report"]) == 0
    out = capsys.readouterr().out
    assert "run-level stages: report (forced)" in out and "t0: up to date" in out
    (tmp_path / "run" / "report.html").unlink()
    assert main(["run", str(cfg_path), "--dry-run"]) == 0
    assert "run-level stages: report (missing output)" in capsys.readouterr().out
