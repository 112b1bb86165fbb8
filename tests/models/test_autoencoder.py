"""Autoencoder3D: shapes, non-cubic patches, size rules, and a self-describing model file."""

from __future__ import annotations

import pytest
import torch

from deepict_dask.errors import ConfigError
from deepict_dask.models import demo_model_path, describe, load_model, read_model_info, save_model
from deepict_dask.models.autoencoder import Autoencoder3D, autoencoder_info


def test_paper_layout_shapes():
    net = Autoencoder3D()
    x = torch.randn(3, 1, 32, 32, 32)
    z = net.encode(x)
    assert z.shape == (3, 32)
    assert net.bottom == (8, 8, 8)
    assert net.from_code[0].out_features == 8 * 8 * 8 * 32  # FC -> 8x8x8x32, as published
    assert net(x).shape == x.shape
    assert net.decode(z).shape == (3, 1, 32, 32, 32)


def test_non_cubic_patch_and_other_sizes():
    net = Autoencoder3D(patch_shape=(16, 24, 32), code_dim=8, filters=4, levels=3)
    x = torch.randn(2, 1, 16, 24, 32)
    assert net.encode(x).shape == (2, 8)
    assert net(x).shape == x.shape


def test_patch_not_divisible_is_one_error():
    with pytest.raises(ConfigError, match="multiple of 2\\*\\*levels = 4"):
        Autoencoder3D(patch_shape=(30, 32, 32))
    net = Autoencoder3D(patch_shape=(16, 16, 16), filters=4)
    with pytest.raises(ConfigError, match="expects patches of \\[16, 16, 16\\]"):
        net.encode(torch.zeros(1, 1, 32, 32, 32))


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(0)
    net = Autoencoder3D(patch_shape=(16, 16, 16), code_dim=6, filters=4)
    info = autoencoder_info("ae", patch_shape=(16, 16, 16), code_dim=6, filters=4, voxel_size=10.0)
    path = save_model(tmp_path / "ae.safetensors", net, info)
    meta = read_model_info(path)
    assert meta.task == "autoencoder" and meta.architecture["kind"] == "Autoencoder3D"
    assert meta.classes == ["reconstruction"]
    loaded, _ = load_model(path)  # no probability head for an autoencoder
    assert isinstance(loaded, Autoencoder3D)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x), net.eval().encode(x), atol=1e-6)
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    summary = describe(meta)  # what `deepict model-info` prints
    assert summary["architecture"]["kind"] == "Autoencoder3D" and summary["parameters"] > 0


def test_segmentation_models_default_to_segmentation_task():
    info = read_model_info(demo_model_path("demo3d"))
    assert info.task == "segmentation"
