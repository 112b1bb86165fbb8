"""An autoencoder model file where a segmentation model is needed: one clear line, nothing written."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

import deepict_dask.models.files as model_files
from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, InputError
from deepict_dask.inference.predict import PredictOptions, make_ref
from deepict_dask.io import write_ome_zarr
from deepict_dask.io.volume import make_volume
from deepict_dask.models import ModelInfo, load_model, require_segmentation, save_model

from ..train.test_patch_stack import TinyAE

MESSAGE = "model 'ae' is an autoencoder (task autoencoder), not a segmentation model"


@pytest.fixture
def autoencoder(tmp_path, monkeypatch):
    """An autoencoder model file; its kind registered as mine's Autoencoder3D will be after the merge."""
    monkeypatch.setitem(model_files.KINDS, "Autoencoder3D", TinyAE)
    info = ModelInfo(name="ae", dim=3, classes=["reconstruction"], task="autoencoder",
                     architecture={"kind": "Autoencoder3D"}, patch_size=[16, 16, 16], voxel_size=10.0)
    torch.manual_seed(0)
    return save_model(tmp_path / "ae.safetensors", TinyAE(), info)


@pytest.fixture
def tomo(tmp_path):
    path = tmp_path / "t.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
        m.voxel_size = 10.0
    return path


def test_helper_and_loading(autoencoder):
    module, info = load_model(autoencoder)
    assert info.task == "autoencoder" and isinstance(module, TinyAE)  # no probability head on a reconstruction
    with pytest.raises(InputError) as exc:
        require_segmentation(info, autoencoder)
    assert str(exc.value).startswith(f"{autoencoder}: {MESSAGE}")
    seg = info.model_copy(update={"task": "segmentation"})
    require_segmentation(seg)  # no error
    assert ModelInfo.model_validate({**info.model_dump(), "task": "segmentation"}).task == "segmentation"
    assert ModelInfo(name="u", dim=3, classes=["a"], architecture={"kind": "UNet3D"}, patch_size=[8, 8, 8],
                     voxel_size=1.0).task == "segmentation"  # files written before the field stay segmentation


def test_predict_refuses_an_autoencoder(tmp_path, autoencoder, tomo, capsys):
    with pytest.raises(InputError, match="not a segmentation model"):
        make_ref(autoencoder, PredictOptions())
    out = tmp_path / "pred"
    assert main(["predict", str(tomo), "--model", str(autoencoder), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deepict predict: error: {autoencoder}: {MESSAGE}; train a segmentation model (e.g. EDSS3D "
                   "on its weak labels) and use that"]
    assert not out.exists()


def test_pick_refuses_a_map_made_by_an_autoencoder(tmp_path, autoencoder, capsys, monkeypatch):
    import dataclasses

    import deepict_dask.cluster as cluster

    real = cluster.make_cluster
    monkeypatch.setattr(cluster, "make_cluster", lambda spec: real(dataclasses.replace(
        spec, processes=False, dashboard_address="127.0.0.1:0")))
    vol = np.zeros((1, 8, 8, 8), np.uint8)
    vol[0, 2:5, 2:5, 2:5] = 250
    store = tmp_path / "t.ome.zarr"
    write_ome_zarr(make_volume(vol, 10.0, channels=["reconstruction"]), store, group="predictions/ae", levels=1,
                   attrs={"prediction": {"scale": 1 / 255, "activation": "sigmoid", "model_path": str(autoencoder)}})
    out = tmp_path / "picks.csv"
    assert main(["pick", str(store), "--out", str(out), "--workers", "1", "--no-progress"]) == 2
    assert MESSAGE in capsys.readouterr().err and not out.exists()


def test_run_and_tune_refuse_an_autoencoder(tmp_path, autoencoder):
    from deepict_dask.evaluate.tune import tune
    from deepict_dask.pipeline.config import parse_config
    from deepict_dask.pipeline.run import check_models

    cfg = parse_config("inputs: {paths: ['*.mrc']}\noutput: {dir: run}\n"
                       f"models: [{{name: ae, path: {autoencoder}}}]\n"
                       "targets: [{name: reconstruction, model: ae, kind: segmentation}]\n", base_dir=tmp_path)
    with pytest.raises(ConfigError) as exc:
        check_models(cfg, [])
    assert str(exc.value) == f"models: ae: {autoencoder}: {MESSAGE}; train a segmentation model (e.g. EDSS3D on " \
        "its weak labels) and use that"
    truth = pd.DataFrame({"tomo": ["t"], "class": ["reconstruction"], "x": [1.0], "y": [1.0], "z": [1.0]})
    with pytest.raises(InputError, match=MESSAGE.replace("(", r"\(").replace(")", r"\)")):
        tune(autoencoder, {}, truth, 2.0, thresholds=[0.5], min_sizes=[1], write=False)


@pytest.mark.parametrize("dry", [False, True])
def test_deepict_run_with_an_autoencoder_leaves_no_folder(tmp_path, autoencoder, tomo, capsys, dry):
    """Refused by its model check, ``deepict run`` (and its dry run) creates no output folder at all."""
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"inputs: {{paths: ['{tomo}']}}\noutput: {{dir: {out}}}\n"
                   f"models: [{{name: ae, path: {autoencoder}}}]\n"
                   "targets: [{name: reconstruction, model: ae, kind: segmentation}]\n")
    assert main(["run", str(cfg), "--no-progress", *(["--dry-run"] if dry else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and MESSAGE in err[0]
    assert not out.exists()
