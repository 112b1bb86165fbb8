"""combine / evaluate / report as run-level engine stages; the report takes its inputs from the manifest."""

from __future__ import annotations

import distributed
import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

from deepict_dask.cli.main import main
from deepict_dask.layout import RUN_RECORD, RunLayout
from deepict_dask.pipeline.config import load_config
from deepict_dask.pipeline.manifest import Manifest
from deepict_dask.pipeline.run import run_workflow

CONFIG = """\
inputs:
  paths: ["tomos/*.mrc"]
  truth: "refs/{name}.csv"
output: {dir: run, chunks: 32, levels: 1}
models:
  - {name: m3, path: tiny3d.safetensors, patch: 16, overlap: 2}
targets:
  - {name: ribosome, model: m3, threshold: 0.5, min_size: 2}
evaluation: {tolerance: 3, unit: vox}
"""


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


@pytest.fixture
def project(tmp_path):
    """Two tiny tomograms, an untrained 3D model and truth tables whose names say nothing of truth."""
    from deepict_dask.models import ModelInfo, build_network, save_model

    torch.manual_seed(0)
    info = ModelInfo(name="tiny3d", dim=3, classes=["ribosome"], patch_size=[16, 16, 16],
                     architecture={"kind": "UNet3D", "depth": 1, "initial_filters": 2, "batch_norm": False},
                     voxel_size=10.0)
    save_model(tmp_path / "tiny3d.safetensors", build_network(info), info)
    rng = np.random.default_rng(3)
    (tmp_path / "tomos").mkdir()
    (tmp_path / "refs").mkdir()
    for i in range(2):
        with mrcfile.new(tmp_path / "tomos" / f"t{i}.mrc") as m:
            m.set_data(rng.normal(size=(16, 32, 32)).astype(np.float32))
            m.voxel_size = 10.0
        pd.DataFrame({"tomo": f"t{i}", "class": "ribosome", "x": [5.0, 20.0], "y": [5.0, 20.0], "z": [5.0, 12.0],
                      "x_A": [50.0, 200.0], "y_A": [50.0, 200.0], "z_A": [50.0, 120.0]}).to_csv(
            tmp_path / "refs" / f"t{i}.csv", index=False)
    (tmp_path / "run.yaml").write_text(CONFIG)
    return tmp_path


def test_run_stages_resume_recompute_force_and_plan_once(project, client, monkeypatch):
    import deepict_dask.pipeline.run as run_mod

    built: dict[str, int] = {}
    real = run_mod.build_stages

    def counting(config, job):
        built[job.name] = built.get(job.name, 0) + 1
        return real(config, job)

    monkeypatch.setattr(run_mod, "build_stages", counting)
    monkeypatch.chdir(project)
    config = load_config(project / "run.yaml")
    first = run_workflow(config, client=client)
    assert first.exit_code == 0 and first.run_stages.ran == ["combine", "evaluate", "report"]
    assert built == {"t0": 1, "t1": 1}
    layout = RunLayout(project / "run")
    rec = Manifest(layout.root).load(RUN_RECORD)
    assert set(rec.stages) == {"combine", "evaluate", "report"}
    assert rec.stages["report"].inventory  # inventoried like any stage: damage is detected
    assert first.evaluation["tomograms"] == ["t0", "t1"]

    again = run_workflow(config, client=client)
    assert again.run_stages.ran == [] and again.outputs["report"] == layout.report

    layout.report.unlink()
    repaired = run_workflow(config, client=client)
    assert repaired.run_stages.ran == ["report"] and layout.report.is_file()

    forced = run_workflow(config, client=client, force=["report"])
    assert forced.run_stages.ran == ["report"]
    assert all(o.ran == [] for o in forced.outcomes.values())

    # a changed tolerance re-evaluates and re-reports, without re-combining
    config.evaluation.tolerance = 4
    changed = run_workflow(config, client=client)
    assert changed.run_stages.ran == ["evaluate", "report"]


def test_report_finds_truth_through_the_manifest(project, client, monkeypatch, capsys):
    monkeypatch.chdir(project)
    result = run_workflow(load_config(project / "run.yaml"), client=client)
    assert result.exit_code == 0
    page = (project / "run" / "report.html").read_text()
    assert "truth: " in page and "refs/t0.csv" in page
    # `deepict report` on the run directory uses the inputs the run recorded, truth included
    assert main(["report", "run", "-o", "again.html"]) == 0
    page = (project / "again.html").read_text()
    assert "truth: " in page and "refs/t1.csv" in page
    assert "particles.csv" in page and "t0_particles.csv" in page
