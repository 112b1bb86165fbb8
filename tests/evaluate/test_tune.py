"""Tuned picking settings: evaluate sweep --write-model records them, model-info shows them, pick and
run use them by default, explicit settings win, bad input is one clear line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.evaluate.tune import tune
from deepict_dask.io import write_ome_zarr
from deepict_dask.io.checksum import file_sha256
from deepict_dask.io.coords import read_table
from deepict_dask.io.volume import make_volume
from deepict_dask.models import read_model_info
from deepict_dask.pick.api import open_map, pick, plan_picks, tuned_settings
from deepict_dask.pick.options import PickOptions
from tests.evaluate.test_sweep import synthetic
from tests.helpers import tiny_model

pytestmark = pytest.mark.usefixtures("threaded_cluster")  # the CLI's cluster, with threads
DASK = ["--workers", "1", "--threads-per-worker", "2", "--no-progress"]
GRID = ["--thresholds", "0.2,0.5,0.95", "--min-sizes", "1,50,200"]


def _model(tmp_path, name="tiny", seed=0):
    return tiny_model(tmp_path / f"{name}.safetensors", name=name, classes=["ribo", "memb"], filters=4, seed=seed)


def _store(tmp_path, model, tomo="tomo1"):
    """A deepict-predict-like store: ribo = the synthetic map (4 particles, 2 specks, 1 dim blob)."""
    prob, truth = synthetic()
    probs = make_volume(np.round(np.stack([prob, np.zeros_like(prob)]) * 255).astype(np.uint8), 10.0,
                        channels=["ribo", "memb"])
    store = tmp_path / f"{tomo}.ome.zarr"
    write_ome_zarr(probs, store, group="predictions/tiny", levels=1, chunks=16,
                   attrs={"prediction": {"scale": 1 / 255, "activation": "sigmoid", "model_path": str(model),
                                         "model_sha256": file_sha256(model)}})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return store


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_tune_writes_model_metadata_and_pick_uses_it(tmp_path, caplog):
    """The Python API: tune() writes the entry, tuned_settings/plan_picks give it to pick, explicit wins."""
    model = _model(tmp_path)
    store = _store(tmp_path, model)
    before = _weights(model)
    vol = open_map(store)
    res = tune(model, {"tomo1": vol}, pd.read_csv(tmp_path / "truth.csv"), 2.0, classes=["ribo"],
               thresholds=[0.2, 0.5, 0.95], min_sizes=[1, 50, 200])
    assert res["ribo"]["entry"]["min_size"] == 50
    entry = read_model_info(model).picking["ribo"]
    assert {k: entry[k] for k in ("threshold", "min_size", "method", "f1", "tolerance", "validated_on")} == {
        "threshold": 0.5, "min_size": 50, "method": "cc", "f1": 1.0, "tolerance": 2.0, "validated_on": ["tomo1"]}
    after = _weights(model)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)

    # pick: the tuned settings by default (the store was predicted before tuning: same weights)
    tuned, path = tuned_settings(vol)
    assert path == model and set(tuned) == {"ribo"}
    [(classes, settings)], notes = plan_picks(["ribo"], tuned, PickOptions())
    assert (settings.threshold, settings.min_size, settings.method.name) == (0.5, 50, "cc")
    assert notes == {"ribo": {"threshold": "0.5", "min size": "50", "method": "cc"}}
    assert len(pick(vol, settings, classes=classes).table) == 4
    # explicit options win
    [(_, settings)], notes = plan_picks(["ribo"], tuned, PickOptions(min_size=1))
    assert settings.min_size == 1 and "min size" not in notes["ribo"]
    assert len(pick(vol, settings, classes=["ribo"]).table) == 6
    # all classes: ribo tuned, memb (not tuned, empty map) with the built-in defaults
    groups, _ = plan_picks(["ribo", "memb"], tuned, PickOptions())
    assert [(c, s.min_size) for c, s in groups] == [(["ribo"], 50), (["memb"], None)]
    assert sum(len(pick(vol, s, classes=c).table) for c, s in groups) == 4


def test_cli_pick_says_which_tuned_defaults_it_uses(tmp_path, capsys):
    """The CLI's own job: --write-model, model-info showing the entry, pick printing the tuned defaults."""
    model = _model(tmp_path)
    store = _store(tmp_path, model)
    assert main(["evaluate", "sweep", "--pred", str(store), "--truth", str(tmp_path / "truth.csv"), "--class", "ribo",
                 "--tolerance", "2", *GRID, "--write-model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "ribo: threshold 0.5, min size 50 (cc): F1 1.000" in out and "warning" not in out
    assert main(["model-info", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["picking"]["ribo"]["min_size"] == 50
    assert main(["model-info", str(model)]) == 0
    assert "picking: ribo" in capsys.readouterr().out
    assert main(["pick", str(store), "--out", str(tmp_path / "c.csv"), "--summary", str(tmp_path / "c.json"), *DASK]) == 0
    assert "ribo: threshold 0.5, min size 50, method cc (defaults tuned for the model" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "c.json").read_text())) == {"ribo", "memb"}
    assert len(read_table(tmp_path / "c.csv")) == 4


def test_pick_ignores_settings_of_a_changed_model_file(tmp_path, caplog):
    model = _model(tmp_path)
    store = _store(tmp_path, model)
    from deepict_dask.models.files import set_picking

    (tmp_path / "x").mkdir()
    other = _model(tmp_path / "x", seed=1)  # other weights, another hash
    set_picking(other, {"ribo": {"threshold": 0.5, "min_size": 50, "method": "cc", "validated_sha256": "f" * 64}})
    model.write_bytes(other.read_bytes())  # another network at the recorded path
    vol = open_map(store)
    with caplog.at_level("WARNING"):
        assert tuned_settings(vol) == ({}, model)
    assert "changed since this prediction was made" in caplog.text
    assert len(pick(vol, classes=["ribo"]).table) == 6  # the built-in defaults


def test_tune_watershed_min_distance_and_edge_warning(tmp_path, capsys):
    model = _model(tmp_path)
    store = _store(tmp_path, model)
    assert main(["evaluate", "sweep", "--pred", str(store), "--truth", str(tmp_path / "truth.csv"), "--class", "ribo",
                 "--tolerance", "2", "--thresholds", "0.2,0.5", "--min-sizes", "1,50", "--method", "watershed",
                 "--min-distances", "30,60", "--write-model", str(model)]) == 0
    out = capsys.readouterr().out
    entry = read_model_info(model).picking["ribo"]
    assert entry["method"] == "watershed" and entry["min_distance_A"] in (30.0, 60.0) and entry["f1"] == 1.0
    assert "warning: ribo: the best threshold 0.5 is the largest value tried" in out


def test_run_targets_take_the_tuned_values(tmp_path):
    from deepict_dask.models.files import set_picking
    from deepict_dask.pipeline.config import parse_config
    from deepict_dask.pipeline.stages import _target_params, build_stages

    model = _model(tmp_path)
    set_picking(model, {"ribo": {"threshold": 0.35, "min_size": 40, "method": "watershed", "min_distance_A": 60.0}})
    text = f"""\
inputs: {{paths: [a.mrc]}}
models: [{{name: m, path: {model}}}]
targets:
  - {{name: ribo, model: m}}
  - {{name: ribo2, model: m, class: ribo, pick: {{threshold: 0.7, min_size: 5, method: watershed}}}}
  - {{name: memb, model: m}}
  - {{name: ribo3, model: m, class: ribo, pick: {{method: cc}}}}
"""
    config = parse_config(text)
    job = type("Job", (), {"header": {}, "name": "a"})()
    stages = {s.name: s.params["pick"] for s in build_stages(config, job) if s.name.startswith("pick:")}
    assert (stages["pick:ribo"]["threshold"], stages["pick:ribo"]["min_size"]) == (0.35, 40)
    # no method in the config: the tuned one, with its seed distance (as `deepict pick` does)
    assert stages["pick:ribo"]["method"]["name"] == "watershed"
    assert stages["pick:ribo"]["method"]["min_distance"] == "60A"
    # an explicit other method keeps the tuned threshold and size but not the watershed seed distance
    assert stages["pick:ribo3"]["method"] == {"name": "cc"}
    assert (stages["pick:ribo3"]["threshold"], stages["pick:ribo3"]["min_size"]) == (0.35, 40)
    assert (stages["pick:ribo2"]["threshold"], stages["pick:ribo2"]["min_size"]) == (0.7, 5)
    assert stages["pick:ribo2"]["method"]["min_distance"] == "60A"
    assert (stages["pick:memb"]["threshold"], stages["pick:memb"]["min_size"]) == (0.5, None)
    assert _target_params(config.targets[0], 64)["pick"]["threshold"] == 0.5


@pytest.mark.parametrize("extra, message", [
    (["--class", "nucleus"], "model 'tiny' has no class 'nucleus' (it has ribo, memb)"),
    (["--class", "memb"], "no rows of class 'memb'"),
    (["--class", "ribo", "--thresholds", "0.5"], "thresholds (--thresholds) needs at least two values"),
    (["--class", "ribo", "--min-distances", "30,60"], "min_distances (--min-distances) applies to method watershed or peaks"),
])
def test_tune_bad_input_is_one_line_and_leaves_the_model(tmp_path, capsys, extra, message):
    model = _model(tmp_path)
    store = _store(tmp_path, model)
    data = model.read_bytes()
    assert main(["evaluate", "sweep", "--pred", str(store), "--truth", str(tmp_path / "truth.csv"), "--tolerance", "2",
                 *GRID, "--write-model", str(model), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("deepict evaluate: error:")
    assert model.read_bytes() == data


def test_tune_refuses_a_tomogram_without_truth_rows(tmp_path, capsys):
    model = _model(tmp_path)
    s1 = _store(tmp_path, model)
    s2 = _store(tmp_path, model, tomo="tomo2")  # truth.csv holds tomo1 only
    assert main(["evaluate", "sweep", "--pred", str(s1), str(s2), "--truth", str(tmp_path / "truth.csv"), "--class",
                 "ribo", "--tolerance", "2", *GRID, "--write-model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'ribo' rows for tomogram 'tomo2'" in err and len(err.splitlines()) == 1
    assert read_model_info(model).picking == {}


def test_tuning_keeps_predictions_valid_but_not_picks(tmp_path):
    """Tuning rewrites only the picking settings: the prediction stage keeps its hash, the picks do not."""
    from deepict_dask.io.checksum import file_sha256
    from deepict_dask.models.files import set_picking
    from deepict_dask.pipeline.config import parse_config
    from deepict_dask.pipeline.engine import stage_hashes
    from deepict_dask.pipeline.run import make_jobs
    from deepict_dask.pipeline.stages import build_stages

    model = _model(tmp_path)
    config = parse_config(f"inputs: {{paths: [a.mrc]}}\nmodels: [{{name: m, path: {model}}}]\n"
                          "targets:\n  - {name: ribo, model: m}\n")
    job = make_jobs([type("T", (), {"name": "a", "path": tmp_path / "a.mrc", "fingerprint": {}, "header": {},
                                    "truth": None})()], tmp_path / "run")[0]
    before, file_before = stage_hashes(job, build_stages(config, job)), file_sha256(model)
    set_picking(model, {"ribo": {"threshold": 0.35, "min_size": 40, "method": "cc"}})
    after = stage_hashes(job, build_stages(config, job))
    assert file_sha256(model) != file_before
    assert after["predict:m"] == before["predict:m"] and after["pick:ribo"] != before["pick:ribo"]
