"""EDSS3D: fully convolutional, registered as an architecture, saved/loaded like the U-Nets, and run
through ``deepict predict`` + ``deepict pick`` on a whole tomogram."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch
from torch import nn

import deepict_dask.cluster as cluster
from deepict_dask.cli.main import main
from deepict_dask.io import open_volume
from deepict_dask.io.coords import read_table
from deepict_dask.models import EDSS3D, ModelInfo, build_network, describe, load_model, save_model
from deepict_dask.train import train_edss3d

from ..train.stack_data import synthetic_stack, write_stack


def test_any_window_size_same_size_out_and_no_fully_connected_layer():
    torch.manual_seed(0)
    net = EDSS3D(out_channels=3, depth=2, filters=4)
    assert not any(isinstance(m, nn.Linear) for m in net.modules())
    for shape in [(16, 16, 16), (20, 37, 33), (5, 9, 7)]:
        assert net(torch.zeros(2, 1, *shape)).shape == (2, 3, *shape)
    # fully convolutional: a patch inside a larger input sees the same weights (centre values agree far
    # from the borders of both)
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        big, small = net(x), net(x[..., 8:56, 8:56, 8:56])
    assert torch.allclose(big[..., 28:36, 28:36, 28:36], small[..., 20:28, 20:28, 20:28], atol=1e-5)
    with pytest.raises(ValueError, match="depth"):
        EDSS3D(depth=0)


def test_saved_and_loaded_like_the_unets(tmp_path):
    info = ModelInfo(name="e", dim=3, classes=["a", "b"], activation="softmax", architecture={"preset": "edss3d"},
                     patch_size=[32, 32, 32], voxel_size=10.0)
    torch.manual_seed(1)
    net = build_network(info)
    assert isinstance(net, EDSS3D) and net.head.out_channels == 3
    path = save_model(tmp_path / "e.safetensors", net, info)
    module, loaded = load_model(path)
    x = torch.randn(1, 1, 12, 16, 20)
    with torch.no_grad():
        p = module(x)
        assert torch.allclose(p, torch.softmax(net.eval()(x), 1), atol=1e-6)
    assert loaded.architecture["preset"] == "edss3d" and loaded.task == "segmentation"
    assert describe(loaded)["parameters"] == sum(q.numel() for q in net.parameters())


@pytest.fixture
def inprocess_cluster(monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setattr(cluster, "make_cluster", lambda spec: LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0"))


def test_trained_edss3d_predicts_a_tomogram_and_feeds_pick(tmp_path, inprocess_cluster, capsys):
    imgs, labs = synthetic_stack(32, 16, slabs=False)  # weakly labelled patches: one ball each
    p = write_stack(tmp_path / "patches.zarr", imgs)
    lab = write_stack(tmp_path / "labels.zarr", labs)
    res = train_edss3d(p, lab, ["ball"], tmp_path / "run", {"batch_size": 8, "max_epochs": 12, "lr": 5e-3,
                                                             "threads": 1, "device": "cpu", "model": {"filters": 8}})
    tomo = tmp_path / "cell.mrc"
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 0.3, (24, 40, 36)).astype(np.float32)
    z, y, x = np.indices(vol.shape)
    centres = [(8, 10, 10), (14, 28, 24)]
    for c in centres:
        vol[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 4.5**2] += 2.0
    with mrcfile.new(tomo) as m:
        m.set_data(vol)
        m.voxel_size = 10.0
    out = tmp_path / "pred"
    assert main(["predict", str(tomo), "--model", str(res.model_path), "--out", str(out), "--patch", "32",
                 "--overlap", "4", "--no-progress"]) == 0
    store = out / "cell.ome.zarr"
    pred = open_volume(store, group="predictions/edss3d")
    assert pred.dims == ("c", "z", "y", "x") and pred.shape == (1, 24, 40, 36)
    assert list(pred["c"].values) == ["ball"] and pred.attrs["prediction"]["activation"] == "softmax"
    table = tmp_path / "balls.csv"
    assert main(["pick", str(store), "--threshold", "0.25", "--min-size", "8", "--out", str(table),
                 "--workers", "1", "--threads-per-worker", "2", "--no-progress"]) == 0
    t = read_table(table)
    assert {"x", "y", "z", "x_A", "y_A", "z_A"} <= set(t.columns) and set(t["class"]) == {"ball"}
    found = t[["z", "y", "x"]].to_numpy()
    assert len(found) == 2, t
    for c in centres:
        assert np.linalg.norm(found - np.array(c), axis=1).min() <= 2.0
