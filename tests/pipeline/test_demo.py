"""``deepict demo``: simulated tomograms through the whole workflow with the shipped models."""

from __future__ import annotations

import json

import distributed
import pandas as pd
import pytest
import starfile

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError
from deepict_dask.pipeline.demo import mask_scores, run_demo


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def test_demo_end_to_end_small(tmp_path, client):
    out = tmp_path / "demo"
    result = run_demo(out, n=1, shape=(64, 128, 128), client=client)
    assert result.exit_code == 0, {n: o.reason for n, o in result.outcomes.items()}
    run = out / "run"
    assert (out / "run.yaml").is_file() and (out / "data" / "tomograms" / "sim_0200.mrc").is_file()
    for name in ("report.html", "evaluation.json", "particles.csv", "particles.star", "summary.csv", "provenance.json"):
        assert (run / name).is_file(), name
    ev = json.loads((run / "evaluation.json").read_text())
    assert 0.0 <= ev["f1"] <= 1.0 and "ribosome" in ev["per_class"]
    assert result.evaluation["f1"] == ev["f1"]
    picks = pd.read_csv(run / "particles.csv")
    assert set(picks["class"]) <= {"ribosome", "fas"}
    # output.tilt_series_pixel_size reaches the run-wide and per-tomogram STAR files: nothing is assumed
    for star in (run / "particles.star", run / "tables" / "sim_0200" / "sim_0200_particles.star"):
        assert "assumed" not in star.read_text()
        assert set(starfile.read(star)["rlnTomoTiltSeriesPixelSize"]) <= {13.48}
    store = run / "tomograms" / "sim_0200.ome.zarr"
    assert (store / "predictions").is_dir() and (store / "labels" / "cytosol").is_dir()
    # the segmentation targets are scored against the simulated masks (the demo prints these)
    masks = mask_scores(run, out / "data", ["sim_0200"])
    assert set(masks) == {"membrane", "cytosol", "organelle"}
    assert all(0.0 <= m["voxel_f1"] <= 1.0 for m in masks.values())
    assert masks["membrane"]["tp"] + masks["membrane"]["fn"] > 0  # (this small tomogram may lack organelles)
    assert masks["cytosol"]["voxel_f1"] > 0.5  # the shipped 2D model finds the cytosol
    # the demo resumes: a second call simulates and computes nothing
    again = run_demo(out, n=1, shape=(64, 128, 128), client=client)
    assert all(o.ran == [] for o in again.outcomes.values())


def test_demo_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"n \(--n\) must be at least 1"):
        run_demo(tmp_path / "d", n=0)
    with pytest.raises(ConfigError, match="--shape"):
        run_demo(tmp_path / "d", shape=(8, 8, 8))
    assert main(["demo", "--out", str(tmp_path / "d"), "--n", "0"]) == 2


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out
