"""U-Nets, model files (safetensors + ModelInfo), voxel-size checks, FLOPs and `deepict model-info`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepict_dask.cli.main import main
from deepict_dask.errors import DeepictError, InputError
from deepict_dask.models import (
    PRESETS,
    ModelInfo,
    UNet2D,
    UNet3D,
    architecture_from,
    build_network,
    check_voxel_size,
    describe,
    flops_per_voxel,
    load_model,
    parameter_count,
    save_model,
)
from deepict_dask.models.files import META_KEY


def _info(**kw) -> ModelInfo:
    base = dict(name="t", dim=3, classes=["ribosome", "membrane"], architecture={"kind": "UNet3D", "depth": 2,
                "initial_filters": 4}, patch_size=[32, 32, 32], voxel_size=13.48)
    base.update(kw)
    return ModelInfo(**base)


@pytest.mark.parametrize("shape", [(32, 32, 32), (17, 30, 23)])
def test_unet3d_any_size(shape):
    net = UNet3D(out_channels=3, depth=2, initial_filters=4).eval()
    out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 3, *shape)


def test_unet2d_deepict_preset_widths():
    arch = architecture_from("deepict_2d")
    assert arch.pop("kind") == "UNet2D"
    net = UNet2D(out_channels=2, **arch).eval()
    convs = [m for m in net.down.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs[::2]] == [16, 32, 64, 128, 256]
    assert net(torch.randn(1, 1, 80, 80)).shape == (1, 2, 80, 80)


def test_presets_build():
    for name in PRESETS:
        arch = architecture_from(name)
        kind = arch["kind"]
        info = _info(dim=2 if kind == "UNet2D" else 3, architecture=arch, patch_size=[32] * (2 if kind == "UNet2D" else 3))
        assert parameter_count(build_network(info)) > 0
    deepfinder = architecture_from("deepfinder")
    assert deepfinder["filters"] == [32, 48, 64] and deepfinder["depth"] == 2
    # preset with overrides
    assert architecture_from({"preset": "deepict_ribosome", "initial_filters": 8})["initial_filters"] == 8


def test_flops_single_conv():
    conv = torch.nn.Conv3d(1, 4, 3, padding=1)
    assert flops_per_voxel(conv, 1, (8, 8, 8)) == pytest.approx(2 * 27 * 4)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    info = _info()
    net = build_network(info).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_()
    path = save_model(tmp_path / "m.safetensors", net, info)
    module, info2 = load_model(path)
    assert info2.classes == info.classes and info2.software_version
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        assert torch.allclose(module(x), torch.sigmoid(net(x)), atol=1e-6)
        logits, _ = load_model(path, probabilities=False)
        assert torch.allclose(logits(x), net(x), atol=1e-6)
    half = save_model(tmp_path / "h.safetensors", net, info, half=True)
    assert half.stat().st_size < path.stat().st_size * 0.6
    mh, _ = load_model(half)
    with torch.no_grad():
        assert (mh(x) - module(x)).abs().max() < 5e-2


def test_softmax_model_probabilities(tmp_path):
    info = _info(activation="softmax", architecture={"preset": "deepfinder", "filters": [4, 6, 8]})
    path = save_model(tmp_path / "s.safetensors", build_network(info), info)
    module, info2 = load_model(path)
    with torch.no_grad():
        p = module(torch.randn(1, 1, 16, 16, 16))
    assert p.shape[1] == info2.out_channels == 3
    assert torch.allclose(p.sum(1), torch.ones(1, 16, 16, 16), atol=1e-5)


def test_bad_model_files(tmp_path):
    info = _info()
    net = build_network(info)
    good = save_model(tmp_path / "g.safetensors", net, info)
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all" * 10)
    for name in ("trunc.safetensors", "junk.safetensors", "missing.safetensors"):
        with pytest.raises(InputError, match=name):
            load_model(tmp_path / name)
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(tmp_path / "nometa.safetensors"))
    with pytest.raises(InputError, match="metadata"):
        load_model(tmp_path / "nometa.safetensors")
    meta = json.loads(info.model_dump_json())
    meta["evil"] = "__import__('os')"
    save_file(tensors, str(tmp_path / "extra.safetensors"), metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(InputError, match="evil"):
        load_model(tmp_path / "extra.safetensors")
    wrong = info.model_copy(update={"architecture": {"kind": "UNet3D", "depth": 2, "initial_filters": 8}})
    save_file(tensors, str(tmp_path / "wrong.safetensors"), metadata={META_KEY: wrong.model_dump_json()})
    with pytest.raises(InputError, match="do not match"):
        load_model(tmp_path / "wrong.safetensors")


def test_check_voxel_size():
    info = _info(voxel_size=10.0, voxel_size_tolerance=0.1)
    assert check_voxel_size(info, 10.5) == (1.0, 1.0, 1.0)
    with pytest.raises(DeepictError, match="trained at 10"):
        check_voxel_size(info, 20.0)
    assert check_voxel_size(info, (20.0, 20.0, 20.0), rescale=True) == pytest.approx((2.0, 2.0, 2.0))


def test_describe_a_saved_model(tmp_path):
    info = _info(training={"steps": 7, "scores": {"val_loss": 0.5}})
    path = save_model(tmp_path / "m.safetensors", build_network(info), info)
    module, loaded = load_model(path, probabilities=False)
    d = describe(loaded, module)
    assert d["dimensionality"] == "3D" and d["classes"] == ["ribosome", "membrane"]
    assert d["parameters"] == parameter_count(build_network(info)) and d["flops_per_voxel"] > 0
    assert d["voxel_size_A"] == 13.48 and d["trained"]["steps"] == 7


def test_model_info_cli(tmp_path, capsys):
    info = _info(training={"steps": 7, "scores": {"val_loss": 0.5}})
    path = save_model(tmp_path / "m.safetensors", build_network(info), info)
    assert main(["model-info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["ribosome", "membrane"]
    assert main(["model-info", str(path)]) == 0
    assert "parameters" in capsys.readouterr().out
    assert main(["model-info", str(tmp_path / "nope.safetensors")]) == 2


@pytest.mark.parametrize("patch", [[0, 0, 0], [32, 32], [32, -1, 32]])
def test_model_with_impossible_patch_size_is_refused_everywhere(tmp_path, capsys, patch):
    """A crafted file whose patch size has a zero edge or the wrong axis count: one error line, no traceback."""
    from safetensors.torch import save_file

    from deepict_dask.models import read_model_info

    info = _info()
    tensors = {k: v.contiguous() for k, v in build_network(info).state_dict().items()}
    meta = json.loads(info.model_dump_json()) | {"patch_size": patch}
    path = tmp_path / "zero.safetensors"
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    for load in (read_model_info, load_model):
        with pytest.raises(InputError, match="patch_size must be 3 positive edges"):
            load(path)
    capsys.readouterr()
    assert main(["model-info", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"deepict model-info: error: {path}: invalid model metadata")
    assert "patch_size must be 3 positive edges for a 3D model" in lines[0] and captured.out == ""


@pytest.mark.parametrize("name,dim", [("demo3d", 3), ("demo2d", 2)])
def test_shipped_demo_models(name, dim):
    from deepict_dask.models import demo_model_path, describe

    path = demo_model_path(name)
    assert path.stat().st_size <= 5 * 1024 * 1024
    module, info = load_model(path)
    assert info.dim == dim and info.training.get("scores")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1) + (24,) * dim).astype(np.float32))
    with torch.no_grad():
        p = module(x)
    assert p.shape[1] == len(info.classes) and float(p.min()) >= 0 and float(p.max()) <= 1
    assert describe(info, module)["dimensionality"] == f"{dim}D"
