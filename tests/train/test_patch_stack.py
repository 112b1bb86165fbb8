"""Training from patch stacks: EDSS3D (segmentation) and an autoencoder (reconstruction), config checks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import deepict_dask.models.files as model_files
from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, InputError
from deepict_dask.models import load_model, read_model_info
from deepict_dask.train import parse_config, train, train_autoencoder, train_edss3d
from deepict_dask.train.loop import load_checkpoint
from deepict_dask.train.patch_stack import StackSampler, open_patch_stack, split_indices

from .stack_data import synthetic_stack, write_stack

FAST = {"batch_size": 8, "threads": 1, "device": "cpu", "model": {"filters": 8}}


class TinyAE(nn.Module):
    """Any network whose forward returns a reconstruction of its input (the training code must not care)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, patch_shape=(16, 16, 16), width: int = 4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2))
        self.dec = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv3d(width, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


@pytest.fixture
def stack(tmp_path):
    imgs, labs = synthetic_stack(48, 16)
    return write_stack(tmp_path / "patches.zarr", imgs), write_stack(tmp_path / "labels.zarr", labs), imgs, labs


@pytest.fixture
def autoencoder_kind(monkeypatch):
    monkeypatch.setitem(model_files.KINDS, "Autoencoder3D", TinyAE)


def _log(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_edss3d_learns_weak_labels_from_a_patch_stack(tmp_path, stack):
    patches, labels, _, _ = stack
    res = train_edss3d(patches, labels, ["ball", "slab"], tmp_path / "run",
                       {**FAST, "max_epochs": 12, "lr": 4e-3, "augment": False})
    info = read_model_info(res.model_path)
    assert info.task == "segmentation" and info.architecture["kind"] == "EDSS3D"
    assert info.classes == ["ball", "slab"] and info.activation == "softmax" and info.patch_size == [16, 16, 16]
    assert info.voxel_size == 10.0
    summary = info.training["data"]["patch_stack"]
    assert summary["train"] + summary["validation"] == 48 and summary["validation"] == 5
    cfg = info.training["config"]
    assert cfg["optimizer"]["betas"] == [0.9, 0.99] and cfg["training"]["validate_every"] == 6  # one epoch = 43/8
    rows = [r for r in _log(tmp_path / "run" / "log.csv") if r["val_loss"]]
    assert len(rows) == 12 and res.steps == 72
    first, best = float(rows[0]["val_loss"]), res.best["val_loss"]
    assert best < 0.4 * first, (first, best)
    assert res.best["val_voxel_f1"]["slab"] > 0.5
    # the saved file is the best validation's weights, and it segments slabs
    module, _ = load_model(res.model_path)
    imgs, labs = synthetic_stack(6, 16, seed=5)
    with torch.no_grad():
        prob = module(torch.from_numpy(imgs[:, None])).numpy()
    assert prob.shape == (6, 3, 16, 16, 16) and np.allclose(prob.sum(1), 1, atol=1e-4)
    pred, truth = prob.argmax(1) == 2, labs == 2
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.5


def test_autoencoder_objective_is_reconstruction_and_file_says_autoencoder(tmp_path, stack, autoencoder_kind):
    patches, _, imgs, _ = stack
    res = train_autoencoder(patches, tmp_path / "ae", {"threads": 1, "device": "cpu", "max_epochs": 8, "lr": 3e-3})
    info = read_model_info(res.model_path)
    assert info.task == "autoencoder" and info.architecture["kind"] == "Autoencoder3D"
    assert info.training["config"]["data"]["batch_size"] == 8  # the paper's batch for the autoencoder
    assert info.training["config"]["loss"] == [{"kind": "mse", "weight": 1.0, "alpha": 0.5, "beta": 0.5,
                                                      "centre_sigma": None}]
    rows = [r for r in _log(tmp_path / "ae" / "log.csv") if r["val_loss"]]
    assert rows and all(r["val_f1_mean"] == "" for r in rows) and "val_voxel_f1" not in res.best
    # loaded without a probability head: the output is the reconstruction, compared with the input by MSE
    module, _ = load_model(res.model_path)
    x = torch.from_numpy(imgs[:8, None])
    with torch.no_grad():
        rec = module(x)
    mse = float(((rec - x) ** 2).mean())
    assert abs(mse - res.best["val_loss"]) < 0.5 * float((x**2).mean())  # same objective as validated
    assert mse < 0.6 * float(((x - x.mean()) ** 2).mean()), mse  # much better than the mean image
    assert float(rec.min()) < 0  # not squashed by a sigmoid


def test_early_stopping_after_patience_validations_without_improvement(tmp_path, stack, autoencoder_kind):
    patches, _, _, _ = stack
    # a rate too small to change a float32 weight: the validation loss stays exactly the same
    res = train_autoencoder(patches, tmp_path / "ae", {"threads": 1, "device": "cpu", "max_epochs": 40,
                                                        "patience": 2, "lr": 1e-30})
    per_epoch = 6  # ceil(43 / 8)
    assert res.stopped_early and res.steps == 3 * per_epoch
    assert res.best["step"] == per_epoch
    state = load_checkpoint(tmp_path / "ae" / "checkpoint_last.pt")
    assert state["bad"] == 2


def test_split_is_seeded_disjoint_and_complete():
    tr, va = split_indices(50, 0.2, seed=3)
    assert len(va) == 10 and len(tr) == 40 and not set(tr) & set(va) and set(tr) | set(va) == set(range(50))
    tr2, va2 = split_indices(50, 0.2, seed=3)
    assert (va == va2).all() and not (va == split_indices(50, 0.2, seed=4)[1]).all()


def test_sampler_targets_are_masks_or_the_augmented_input(tmp_path, stack, monkeypatch):
    patches, labels, imgs, labs = stack
    cfg = parse_config(_cfg_dict(patches, labels, tmp_path))
    st = open_patch_stack(cfg)
    x, y = StackSampler(st).batch(np.random.default_rng(0), 4, None)
    assert x.shape == (4, 1, 16, 16, 16) and y.shape == (4, 2, 16, 16, 16) and y.dtype == np.uint8
    i = int(np.flatnonzero((imgs == x[0, 0]).all(axis=(1, 2, 3)))[0])
    assert (y[0, 0] == (labs[i] == 1)).all() and (y[0, 1] == (labs[i] == 2)).all()
    # without labels, with augmentation, the target is the augmented input itself
    monkeypatch.setattr("deepict_dask.train.patch_stack.MAX_IN_MEMORY", 0)  # read from Zarr per batch
    d = _cfg_dict(patches, None, tmp_path, kind="Autoencoder3D")
    monkeypatch.setitem(model_files.KINDS, "Autoencoder3D", TinyAE)
    ae = parse_config(d)
    st = open_patch_stack(ae)
    assert not isinstance(st.patches, np.ndarray)
    x, y = StackSampler(st).batch(np.random.default_rng(1), 5, ae.augment)
    assert x.shape == y.shape == (5, 1, 16, 16, 16) and y.dtype == np.float32 and (x == y).all()
    assert set(np.concatenate([st.train_idx, st.val_idx])) == set(range(48))


def _cfg_dict(patches, labels, tmp_path, kind="EDSS3D") -> dict:
    d = {"name": "s", "model": {"kind": kind} if kind != "EDSS3D" else {"kind": "EDSS3D", "filters": 4},
         "data": {"patch_stack": {"patches": str(patches), "labels": str(labels) if labels else None}},
         "output": {"dir": str(tmp_path / "out")}}
    if kind == "EDSS3D":
        d.update(classes=["ball", "slab"], activation="softmax", loss=[{"kind": "ce"}])
    return d


def test_inconsistent_configs_are_one_clear_error(tmp_path, stack, autoencoder_kind):
    patches, labels, _, _ = stack
    seg = _cfg_dict(patches, labels, tmp_path)
    ae = _cfg_dict(patches, None, tmp_path, kind="Autoencoder3D")
    cases = [
        ({**seg, "data": {"patch_stack": {"patches": str(patches)}}}, "a segmentation model needs a label stack"),
        ({**ae, "data": {"patch_stack": {"patches": str(patches), "labels": str(labels)}}},
         "learns from the patches alone"),
        ({**ae, "data": {"train": [{"tomogram": "t.mrc", "labels": "l.zarr"}]}}, "trains on a patch stack"),
        ({**seg, "data": {"train": [{"tomogram": "t.mrc", "labels": "l.zarr"}],
                          "patch_stack": {"patches": str(patches)}}}, "either train (tomograms) or patch_stack"),
        ({**seg, "data": {}}, "data.train: at least one tomogram"),
        ({**seg, "loss": [{"kind": "mse"}]}, "loss 'mse' is the autoencoder's"),
        ({**ae, "loss": [{"kind": "dice"}]}, "trained with 'mse'"),
        ({**seg, "loss": [{"kind": "bce", "centre_sigma": 4}]}, "centre_sigma weighs the reconstruction error"),
        ({**ae, "classes": ["x"]}, "has no classes"),
        ({**ae, "training": {"monitor": "f1"}}, "monitored by loss"),
        ({**seg, "classes": []}, "at least one class"),
        ({**seg, "dim": 2, "model": {"kind": "UNet2D"}}, "patch stacks are 3D"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError) as exc:
            parse_config(data)
        assert message in str(exc.value) and "\n" not in str(exc.value), (message, str(exc.value))


def test_bad_stacks_are_one_clear_error_naming_the_file(tmp_path, stack):
    patches, labels, imgs, labs = stack
    seg = _cfg_dict(patches, labels, tmp_path)

    def err(data, exc_type=InputError):
        with pytest.raises(exc_type) as exc:
            train(parse_config(data), progress=False)
        return str(exc.value)

    assert "label stack not found" in err({**seg, "data": {"patch_stack": {"patches": str(patches),
                                                                            "labels": str(tmp_path / "no.zarr")}}})
    small = write_stack(tmp_path / "small.zarr", labs[:10])
    msg = err({**seg, "data": {"patch_stack": {"patches": str(patches), "labels": str(small)}}})
    assert msg.startswith(str(small)) and "(10, 16, 16, 16)" in msg
    three = write_stack(tmp_path / "three.zarr", np.where(labs == 2, 3, labs).astype(np.uint8))
    msg = err({**seg, "data": {"patch_stack": {"patches": str(patches), "labels": str(three)}}})
    assert "label value 3 has no class" in msg
    empty = write_stack(tmp_path / "empty.zarr", np.zeros_like(labs))
    assert "no labelled voxel" in err({**seg, "data": {"patch_stack": {"patches": str(patches), "labels": str(empty)}}})
    flat = write_stack(tmp_path / "flat.zarr", imgs[:, 0])
    assert "must be (N, Z, Y, X)" in err({**seg, "data": {"patch_stack": {"patches": str(flat), "labels": str(labels)}}})
    msg = err({**seg, "data": {"patch_stack": {"patches": str(patches), "labels": str(labels)},
                               "patch_size": [20, 16, 16]}}, ConfigError)
    assert "is larger than the patch stack's patches [16, 16, 16]" in msg
    novs = write_stack(tmp_path / "novs.zarr", imgs, voxel_size=None)
    msg = err({**seg, "data": {"patch_stack": {"patches": str(novs), "labels": str(labels)}}}, ConfigError)
    assert "set data.voxel_size" in msg
    with pytest.raises(ConfigError, match="batch_size"):
        train_edss3d(patches, labels, ["a", "b"], tmp_path / "r", {"batch_size": 0})


def test_deepict_train_cli_on_a_patch_stack_and_resume(tmp_path, stack, capsys):
    patches, labels, _, _ = stack
    d = _cfg_dict("patches.zarr", "labels.zarr", tmp_path)  # relative to the config file
    d["training"] = {"steps": 8, "validate_every": 4, "device": "cpu", "threads": 1}
    d["data"]["batch_size"] = 4
    d["output"] = {"dir": "run"}
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    assert main(["train", str(cfg_path), "--no-progress"]) == 0
    info = read_model_info(tmp_path / "run" / "model.safetensors")
    assert info.training["steps"] == 8 and info.architecture["kind"] == "EDSS3D"
    d["training"]["steps"] = 12
    cfg_path.write_text(yaml.safe_dump(d))
    assert main(["train", str(cfg_path), "--resume", "--no-progress"]) == 0
    assert read_model_info(tmp_path / "run" / "model.safetensors").training["steps"] == 12
    steps = [int(r["step"]) for r in _log(tmp_path / "run" / "log.csv") if r["val_loss"]]
    assert steps == [4, 8, 12]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["patch_size"] == [16, 16, 16]


def test_smaller_patch_size_trains_on_random_crops_and_validates_on_centre_crops(tmp_path, stack):
    patches, labels, imgs, labs = stack
    d = _cfg_dict(patches, labels, tmp_path)
    d["data"]["patch_size"] = [8, 10, 16]
    st = open_patch_stack(parse_config(d))
    assert st.crop == (8, 10, 16) and st.summary()["patch_stack"]["crop"] == [8, 10, 16]
    x, y = StackSampler(st).batch(np.random.default_rng(0), 16, None)
    assert x.shape == (16, 1, 8, 10, 16) and y.shape == (16, 2, 8, 10, 16)
    offsets = set()
    for xi, yi in zip(x[:, 0], y):
        hits = [(i, oz, oy) for i in range(len(imgs)) for oz in range(9) for oy in range(7)
                if np.array_equal(imgs[i, oz:oz + 8, oy:oy + 10], xi)]
        assert len(hits) == 1  # a crop of one patch, its labels cropped alike
        i, oz, oy = hits[0]
        assert (yi[1] == (labs[i, oz:oz + 8, oy:oy + 10] == 2)).all()
        offsets.add((oz, oy))
    assert len(offsets) > 4  # the object is not always in the middle
    vx, vy = st.validation(100)
    first = st.val_idx[0]
    np.testing.assert_array_equal(vx[0, 0], imgs[first, 4:12, 3:13])


def test_centre_weighted_reconstruction_loss():
    """Weights peak at the patch centre and average 1; an error at the centre costs more than at a corner."""
    import torch

    from deepict_dask.train.config import LossTerm
    from deepict_dask.train.losses import ReconstructionLoss

    plain, centred = ReconstructionLoss([LossTerm(kind="mse")]), ReconstructionLoss([LossTerm(kind="mse", centre_sigma=3)])
    w = centred.centre_weights((13, 12, 12), 3.0, torch.device("cpu"))
    assert w.shape == (13, 12, 12) and float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(w[6, 5:7, 5:7].min()) == pytest.approx(float(w.max())) and float(w[0, 0, 0]) < 0.01 * float(w.max())
    target = torch.zeros(2, 1, 13, 12, 12)
    at_centre, at_corner = target.clone(), target.clone()
    at_centre[:, :, 6, 6, 6] = 1.0
    at_corner[:, :, 0, 0, 0] = 1.0
    assert float(plain(at_centre, target)) == pytest.approx(float(plain(at_corner, target)))
    assert float(centred(at_centre, target)) > 10 * float(centred(at_corner, target))
    noise = torch.randn(2, 1, 13, 12, 12)
    assert float(centred(noise + 1, noise)) == pytest.approx(1.0, rel=1e-4)  # a uniform error: the plain MSE


def test_centre_sigma_is_for_the_autoencoder_only(tmp_path, stack):
    from deepict_dask.train.patch_stack import train_edss3d

    patches, labels, _, _ = stack
    with pytest.raises(ConfigError, match="EDSS3D is trained on labels"):
        train_edss3d(patches, labels, ["a"], tmp_path / "run", {"centre_sigma": 4})
    assert not (tmp_path / "run").exists()
