"""Training: config validation, losses, augmentation, patch sampling, loader, loop, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import yaml

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, InputError
from deepict_dask.train import EXAMPLE, parse_config, resolve_device, train
from deepict_dask.train.augment import augment
from deepict_dask.train.config import AugmentConfig, LossTerm
from deepict_dask.train.data import BatchLoader, PatchSampler, build_dataset
from deepict_dask.train.loop import learning_rate, load_checkpoint
from deepict_dask.train.losses import SegmentationLoss, class_index
from tests.helpers import mrc_file


def _toy(tmp: Path, seed: int, shape=(32, 40, 40), n=8) -> dict:
    """Noisy bright (class a) and dark (class b) spheres."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    img = rng.normal(0, 0.3, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    for i in range(n):
        c = rng.integers(4, np.array(shape) - 4)
        m = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 9
        img[m] += 1.0 if i % 2 == 0 else -1.0
        lab[m] = 1 + i % 2
    t = str(mrc_file(tmp / f"t{seed}.mrc", img))
    lb = str(mrc_file(tmp / f"l{seed}.mrc", lab))
    return {"tomogram": t, "labels": {"a": {"path": lb, "values": [1]}, "b": {"path": lb, "values": [2]}}}


def _cfg(tmp: Path, entries: list[dict], **over) -> dict:
    cfg = {
        "name": "toy", "dim": 3, "classes": ["a", "b"],
        "model": {"kind": "UNet3D", "depth": 1, "initial_filters": 4},
        "data": {"train": entries, "patch_size": [16, 16, 16], "batch_size": 2, "workers": 2, "prefetch": 2},
        "training": {"steps": 12, "validate_every": 4, "validation_patches": 2, "threads": 1, "early_stopping": None},
        "output": {"dir": str(tmp / "run")},
    }
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


@pytest.fixture
def toys(tmp_path):
    return [_toy(tmp_path, s) for s in range(2)]


def test_config_errors_name_key(tmp_path, toys):
    bad = _cfg(tmp_path, toys)
    bad["data"]["patch_sise"] = [8, 8, 8]
    with pytest.raises(ConfigError, match=r"data\.patch_sise: unknown key"):
        parse_config(bad)
    bad = _cfg(tmp_path, toys, optimizer={"lr": -1})
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        parse_config(bad)
    bad = _cfg(tmp_path, toys, loss=[{"kind": "ce"}])
    with pytest.raises(ConfigError, match="softmax"):
        parse_config(bad)
    with pytest.raises(ConfigError, match="patch_size"):
        parse_config(_cfg(tmp_path, toys, data={"patch_size": [16, 16]}))
    with pytest.raises(ConfigError, match="does not fit dim"):
        parse_config(_cfg(tmp_path, toys, model={"kind": "UNet2D"}))
    with pytest.raises(ConfigError, match="bad UNet3D arguments"):
        parse_config(_cfg(tmp_path, toys, model={"kind": "UNet3D", "depht": 2}))
    with pytest.raises(ConfigError, match="unknown preset"):
        parse_config(_cfg(tmp_path, toys, model={"preset": "nope"}))


def test_print_example_is_valid(capsys):
    assert main(["train", "--print-example"]) == 0
    text = capsys.readouterr().out
    assert text == EXAMPLE
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.classes == ["ribosome", "membrane"] and cfg.training.total_steps == 2000


def test_losses():
    t = torch.zeros(2, 2, 8, 8, 8)
    t[:, 0, 2:5, 2:5, 2:5] = 1
    t[:, 1, 4:7, 4:7, 4:7] = 1
    good = (t * 2 - 1) * 20
    for kind in ("dice", "generalized_dice", "tversky", "bce"):
        loss = SegmentationLoss([LossTerm(kind=kind)], "sigmoid")
        assert float(loss(good, t)) < 0.02, kind
        assert float(loss(-good, t)) > 0.5, kind
    idx = class_index(t)
    assert int(idx[0, 4, 4, 4]) == 1  # both set: first class wins
    assert int(idx[0, 6, 6, 6]) == 2 and int(idx[0, 0, 0, 0]) == 0
    sm = torch.nn.functional.one_hot(idx, 3).permute(0, 4, 1, 2, 3).float() * 40 - 20
    both = SegmentationLoss([LossTerm(kind="ce"), LossTerm(kind="dice", weight=0.5)], "softmax")
    assert float(both(sm, t)) < 0.05


def test_augment_keeps_alignment():
    rng = np.random.default_rng(0)
    tgt = (rng.random((2, 8, 10, 12)) > 0.7).astype(np.uint8)
    img = (tgt[0] * 1.0 + tgt[1] * 2.0).astype(np.float32)
    cfg = AugmentConfig(rotate_180=True, flip=True, intensity_scale=0, intensity_shift=0, noise_std=0)
    seen = set()
    for i in range(12):
        a, b = augment(img, tgt, np.random.default_rng(i), cfg, 3)
        assert a.shape == img.shape and np.array_equal(a, b[0] * 1.0 + b[1] * 2.0)
        seen.add(a.tobytes())
    assert len(seen) > 3
    a, b = augment(img[0], tgt[:, 0], np.random.default_rng(1), cfg, 2)
    assert np.array_equal(a, b[0] * 1.0 + b[1] * 2.0)


def test_loader_deterministic_and_object_sampling(tmp_path, toys):
    cfg = parse_config(_cfg(tmp_path, toys, data={"object_fraction": 1.0}))
    ds = build_dataset(cfg)
    assert len(ds.train) == 1 and len(ds.validation) == 1  # split by tomogram
    sampler = PatchSampler(ds.train, [16, 16, 16], 3, 1.0, 0.0)
    _, tgt = sampler.batch(np.random.default_rng(0), 8, None)
    assert all(tgt[i].any() for i in range(8))  # object-centred patches contain the object
    runs = []
    for workers in (1, 3):
        loader = BatchLoader(sampler, 2, seed=5, aug=cfg.augment, workers=workers, prefetch=3)
        runs.append([next(loader)[0] for _ in range(4)])
        loader.close()
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_bad_training_inputs(tmp_path, toys):
    img = mrcfile.read(toys[0]["tomogram"])
    small = str(mrc_file(tmp_path / "small.mrc", np.zeros((16, 16, 16), np.uint8)))
    wrong = {"tomogram": toys[0]["tomogram"], "labels": {"a": small, "b": small}}
    with pytest.raises(InputError, match="shape"):
        build_dataset(parse_config(_cfg(tmp_path, [wrong])))
    empty = str(mrc_file(tmp_path / "empty.mrc", np.zeros(img.shape, np.uint8)))
    with pytest.raises(InputError, match="empty"):
        build_dataset(parse_config(_cfg(tmp_path, [{"tomogram": toys[0]["tomogram"], "labels": {"a": empty, "b": empty}}])))
    absent = dict(toys[0], labels={"a": toys[0]["labels"]["a"], "b": {"path": toys[0]["labels"]["b"]["path"], "values": [9]}})
    with pytest.raises(ConfigError, match=r"\['b'\] have no labelled voxel"):
        build_dataset(parse_config(_cfg(tmp_path, [absent], data={"validation": [toys[1]]})))
    with pytest.raises(ConfigError, match="patch_size"):
        train(parse_config(_cfg(tmp_path, toys, data={"patch_size": [64, 64, 64]})), progress=False)
    nan = img.copy()
    nan[0, 0, 0] = np.nan
    bad = dict(toys[0], tomogram=str(mrc_file(tmp_path / "nan.mrc", nan)))
    with pytest.raises(InputError, match="NaN"):
        build_dataset(parse_config(_cfg(tmp_path, [bad])))
    with pytest.raises(ConfigError, match="missing"):
        build_dataset(parse_config(_cfg(tmp_path, [{"tomogram": toys[0]["tomogram"], "labels": {"a": small}}])))


def test_device_resolution_cpu_fallback():
    cpu = resolve_device("auto", True, cuda_available=False, cpu_bf16=False)
    assert cpu.device.type == "cpu" and cpu.amp_dtype is None and not cpu.grad_scaling
    # CPUs with native bf16 train under bf16 autocast (no gradient scaling: bf16 has fp32's range)
    bf16 = resolve_device("auto", True, cuda_available=False, cpu_bf16=True)
    assert bf16.device.type == "cpu" and bf16.amp_dtype == torch.bfloat16 and not bf16.grad_scaling
    assert resolve_device("cpu", False, cuda_available=True, cpu_bf16=True).amp_dtype is None
    gpu = resolve_device("auto", True, cuda_available=True)
    assert gpu.device.type == "cuda" and gpu.amp_dtype == torch.float16 and gpu.grad_scaling
    assert resolve_device("cuda", False, cuda_available=True).amp_dtype is None
    with pytest.raises(ConfigError, match="cuda"):
        resolve_device("cuda", True, cuda_available=False)


def test_schedule():
    cfg = parse_config({"name": "x", "classes": ["a"], "data": {"train": [{"tomogram": "t", "labels": "l"}]},
                        "optimizer": {"lr": 1.0, "warmup_steps": 10, "min_lr_fraction": 0.1},
                        "training": {"steps": 110}, "output": {"dir": "o"}})
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 110) == pytest.approx(0.1)


def test_train_resume_and_checkpoints(tmp_path, toys):
    cfg = parse_config(_cfg(tmp_path, toys, optimizer={"schedule": "constant"}))
    res = train(cfg, progress=False)
    run = tmp_path / "run"
    assert res.model_path == run / "model.safetensors" and res.steps == 12
    assert (run / "checkpoint_last.pt").is_file() and (run / "checkpoint_best.pt").is_file()
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and [r.split(",")[0] for r in rows[1:]] == ["4", "8", "10", "12"]
    assert sum(1 for r in rows[1:] if r.split(",")[6]) == 3  # validations at 4, 8, 12
    assert "val_f1_a" in rows[0] and res.best["val_voxel_f1"].keys() == {"a", "b"}
    from deepict_dask.models import load_model

    module, info = load_model(res.model_path)
    assert info.training["steps"] == 12 and info.training["data"]["train"][0]["foreground_voxels"]["a"] > 0
    assert info.voxel_size == pytest.approx(10.0)
    final = load_checkpoint(run / "checkpoint_last.pt")["model"]

    # 8 steps, then resume to 12: same weights as the uninterrupted run
    cfg2 = parse_config(_cfg(tmp_path, toys, output={"dir": str(tmp_path / "run2")},
                             optimizer={"schedule": "constant"}))
    cfg2.training.steps = 8
    train(cfg2, progress=False)
    cfg2.training.steps = 12
    assert main_resume(cfg2)
    resumed = load_checkpoint(tmp_path / "run2" / "checkpoint_last.pt")
    assert resumed["step"] == 12
    for k, v in final.items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-5), k

    # a corrupt checkpoint: clear error, nothing overwritten
    ck = tmp_path / "run2" / "checkpoint_last.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(InputError, match="corrupt"):
        train(cfg2, resume=True, progress=False)
    assert len(ck.read_bytes()) == 100


def main_resume(cfg) -> bool:
    # resume uses the same learning-rate schedule (same total steps) and continues at batch 8
    res = train(cfg, resume=True, progress=False)
    return res.steps == 12


def test_train_cli_with_label_volume(tmp_path, toys):
    """`deepict labels` output (class ids inside) used directly as a training label volume; 2D model."""
    lab = mrcfile.read(toys[0]["labels"]["a"]["path"])
    path = str(mrc_file(tmp_path / "lab.mrc", lab))
    Path(path + ".json").write_text(json.dumps({"class_ids": {"a": 1, "b": 2}}))
    cfg = _cfg(tmp_path, [{"tomogram": toys[0]["tomogram"], "labels": path}], dim=2,
               model={"kind": "UNet2D", "depth": 2, "initial_filters": 4},
               data={"patch_size": [16, 16], "validation_fraction": 0.4}, training={"steps": 4, "validate_every": 2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    from deepict_dask.models import load_model

    _, info = load_model(tmp_path / "run" / "model.safetensors")
    assert info.dim == 2 and info.patch_size == [16, 16]
    cfg["model"]["bogus"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-progress"]) == 2
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2


def test_validation_helpers():
    from deepict_dask.models import ModelInfo, build_network
    from deepict_dask.models.unet import ProbabilityHead
    from deepict_dask.train.validate import centroids, predict_array, voxel_f1

    prob = np.zeros((20, 20, 20), np.float32)
    prob[2:5, 2:5, 2:5] = 0.9
    prob[10:16, 12:18, 4:10] = 0.8
    prob[18, 18, 18] = 0.7  # too small
    df = centroids(prob, 0.5, min_size=2)
    assert len(df) == 2 and df.loc[1, ["z", "y", "x"]].tolist() == pytest.approx([12.5, 14.5, 6.5])
    assert voxel_f1(prob > 0.5, prob > 0.75) == pytest.approx(2 * 243 / (244 + 243))
    info = ModelInfo(name="v", dim=3, classes=["a"], architecture={"kind": "UNet3D", "depth": 1, "initial_filters": 2},
                     patch_size=[16, 16, 16], voxel_size=10)
    module = ProbabilityHead(build_network(info).eval(), "sigmoid")
    out = predict_array(module, info, np.random.default_rng(0).normal(size=(20, 40, 30)).astype(np.float32),
                        tile=24, margin=4)
    assert out.shape == (1, 20, 40, 30) and 0 < out.min() and out.max() < 1


def test_threshold_calibration(tmp_path):
    from deepict_dask.models import ModelInfo, build_network, load_model, save_model
    from deepict_dask.train.calibrate import calibrate_thresholds

    info = ModelInfo(name="c", dim=3, classes=["a", "b"], patch_size=[8, 8, 8], voxel_size=10,
                     architecture={"kind": "UNet3D", "depth": 1, "initial_filters": 2})
    src = save_model(tmp_path / "m.safetensors", build_network(info), info)
    out = calibrate_thresholds(src, tmp_path / "c.safetensors", {"a": 0.3})
    m0, _ = load_model(src)
    m1, info1 = load_model(out)
    x = torch.randn(1, 1, 12, 12, 12)
    with torch.no_grad():
        p0, p1 = m0(x), m1(x)
    assert torch.equal(p0[:, 0] > 0.3, p1[:, 0] > 0.5) and torch.allclose(p0[:, 1], p1[:, 1])
    assert info1.training["threshold_calibration"]["a"]["threshold_before"] == 0.3
    with pytest.raises(ConfigError):
        calibrate_thresholds(src, tmp_path / "x.safetensors", {"zzz": 0.3})


def test_time_budget_stops_cleanly_with_the_best_model_and_all_cores_by_default(tmp_path, toys, monkeypatch):
    import deepict_dask.train.loop as loop

    threads = torch.get_num_threads()
    monkeypatch.setattr(loop, "available_cores", lambda: 3)
    cfg = parse_config(_cfg(tmp_path, toys, training={"steps": 10_000, "validate_every": 1000, "threads": None,
                                                      "max_minutes": 1e-4}))
    try:
        res = train(cfg, progress=False)
        assert torch.get_num_threads() == 3  # every core given to training, none held back
    finally:
        torch.set_num_threads(threads)
    # stopped long before 10,000 steps, after validating: the best checkpoint is the model written
    assert res.time_budget_reached and not res.stopped_early and 1 <= res.steps < 50
    assert res.best["step"] == res.steps and (tmp_path / "run" / "checkpoint_best.pt").is_file()
    from deepict_dask.models import load_model

    _, info = load_model(res.model_path)
    assert info.training["time_budget_reached"] and info.training["steps"] == res.steps
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["step"] == res.steps  # --resume goes on
    with pytest.raises(ConfigError, match="training.max_minutes"):
        parse_config(_cfg(tmp_path, toys, training={"max_minutes": 0}))


def test_train_cli_refuses_a_bad_time_budget(tmp_path, toys, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_cfg(tmp_path, toys)))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-progress", "--max-minutes", "-1"]) == 2
    assert "--max-minutes must be positive" in capsys.readouterr().err
