"""Mining options refuse unknown keys and impossible values; the layout names every output path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deepict_dask.mine import ChooseKOptions, ClusterOptions, EncodeOptions, MineLayout, PatchOptions


@pytest.mark.parametrize("make", [
    lambda: PatchOptions(patch_shape=(32, 2, 32)),
    lambda: PatchOptions(normalisation="patch"),
    lambda: ClusterOptions(k=1),
    lambda: ChooseKOptions(ks=(1, 5)),
    lambda: EncodeOptions(precision="fp8"),
])
def test_bad_options_are_refused(make):
    with pytest.raises(ValidationError):
        make()


def test_options_from_config_values():
    opts = PatchOptions.model_validate({"patch_shape": [16, 32, 32], "normalization": "patch"})
    assert opts.patch_shape == (16, 32, 32)
    assert ClusterOptions().k == 100  # the paper's default


def test_layout_paths():
    lay = MineLayout.at("/data/mine")
    assert lay.patches == Path("/data/mine/patches.zarr")
    assert lay.patches_table.name == "patches.csv" and lay.codes.name == "codes.zarr"
    assert lay.labels == Path("/data/mine/clusters/labels.zarr")
    assert lay.autoencoder == Path("/data/mine/models/ae.safetensors")
    assert lay.gallery.name == "gallery.html" and lay.clusters_table.parent == lay.clusters
