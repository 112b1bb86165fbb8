"""Patch stacks: contents equal the tomogram's sub-volumes, normalisation, many tomograms, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from deepict_dask.errors import InputError
from deepict_dask.io.coords import make_table, read_table
from deepict_dask.mine import MineLayout, PatchOptions, extract_patches
from tests.mine.conftest import blob_volume


def _centres(tomo: str, zyx) -> object:
    return make_table(tomo, "dog", zyx=np.asarray(zyx), voxel_size=10.0)


def test_patches_are_the_subvolumes_and_border_centres_are_dropped(blob_mrc, tmp_path):
    a = blob_mrc("tomoA")
    b = blob_mrc("tomoB", seed=7)
    centres = _centres("tomoA", [(20, 20, 20), (32, 40, 15), (3, 30, 30), (45, 31, 50)])
    centres = pd.concat([centres, _centres("tomoB", [(16, 16, 16), (60, 32, 32), (40, 41, 42)])], ignore_index=True)
    layout = MineLayout.at(tmp_path / "mine")
    table = extract_patches([a, b], centres, layout, PatchOptions(patch_shape=(16, 16, 12), normalization="none", chunk=2))
    # (3, 30, 30) and (60, 32, 32) cannot hold a whole 16-voxel patch
    assert table["tomo"].tolist() == ["tomoA", "tomoA", "tomoA", "tomoB", "tomoB"]
    assert table["patch"].tolist() == [0, 1, 2, 3, 4]
    stack = zarr.open_array(str(layout.patches), mode="r")
    assert stack.shape == (5, 16, 16, 12) and stack.chunks == (2, 16, 16, 12) and stack.dtype == np.float32
    vols = {"tomoA": blob_volume(), "tomoB": blob_volume(seed=7)}
    for i, row in table.iterrows():
        z, y, x = int(row.z), int(row.y), int(row.x)
        np.testing.assert_array_equal(stack[i], vols[row.tomo][z - 8 : z + 8, y - 8 : y + 8, x - 6 : x + 6])
    back = read_table(layout.patches_table)
    np.testing.assert_allclose(back["x_A"], back["x"] * 10.0)
    assert back["patch"].tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in layout.root.iterdir() if p.name.startswith(".")] == []  # no temporaries left


@pytest.mark.parametrize("mode", ["tomogram", "patch"])
def test_normalisation(blob_mrc, tmp_path, mode):
    a = blob_mrc("tomoA")
    layout = MineLayout.at(tmp_path / mode)
    extract_patches([a], _centres("tomoA", [(20, 20, 20), (40, 40, 40)]), layout,
                    PatchOptions(patch_shape=(16, 16, 16), normalization=mode))
    stack = zarr.open_array(str(layout.patches), mode="r")[:]
    raw = blob_volume()
    expect = (raw[12:28, 12:28, 12:28] - raw.mean()) / raw.std() if mode == "tomogram" else None
    if mode == "tomogram":
        np.testing.assert_allclose(stack[0], expect, atol=1e-4)
    else:
        np.testing.assert_allclose(stack.mean(axis=(1, 2, 3)), 0, atol=1e-5)
        np.testing.assert_allclose(stack.std(axis=(1, 2, 3)), 1, atol=1e-4)


def test_patch_larger_than_tomogram_is_one_error_and_nothing_is_written(blob_mrc, tmp_path):
    a = blob_mrc("tomoA", shape=(24, 64, 64), centres=())
    layout = MineLayout.at(tmp_path / "mine")
    with pytest.raises(InputError, match=r"tomoA: patch of \[32, 32, 32\] voxels .* larger than the tomogram \(\[24, 64, 64\]"):
        extract_patches([a], _centres("tomoA", [(12, 32, 32)]), layout, PatchOptions())
    assert not layout.patches.exists() and not layout.patches_table.exists()


def test_no_centre_fits_and_unknown_tomogram(blob_mrc, tmp_path):
    a = blob_mrc("tomoA")
    with pytest.raises(InputError, match="no patch centre lies at least half a patch"):
        extract_patches([a], _centres("tomoA", [(2, 2, 2)]), tmp_path / "m", PatchOptions())
    with pytest.raises(InputError, match="names tomogram 'other'"):
        extract_patches([a], _centres("other", [(30, 30, 30)]), tmp_path / "m", PatchOptions())
    assert not (tmp_path / "m" / "patches.zarr").exists()


def test_lowpass_patches_equal_the_smoothed_tomogram_cut_out(tmp_path):
    """Per-patch smoothing with a halo gives the whole-tomogram low-pass, z-scored by its statistics."""
    from scipy import ndimage

    from deepict_dask.io.volume import make_volume
    from deepict_dask.mine.patches import write_patch_stack

    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 48, 44)).astype(np.float32)
    vol = make_volume(data, 10.0, chunks=16)
    centres = pd.DataFrame({"tomo": "t", "class": "c", "x": [22.0, 6.0, 30.0], "y": [24.0, 30.0, 7.0],
                            "z": [20.0, 8.0, 30.0]})
    centres[["x_A", "y_A", "z_A"]] = centres[["x", "y", "z"]].to_numpy() * 10.0
    sigma = 1.5
    table = write_patch_stack({"t": vol}, centres, tmp_path / "p.zarr", tmp_path / "p.csv",
                              PatchOptions(patch_shape=(12, 12, 12), lowpass_sigma=sigma, chunk=2))
    stack = zarr.open_array(str(tmp_path / "p.zarr"), mode="r")[...]
    smooth = ndimage.gaussian_filter(data, sigma, mode="nearest", truncate=4.0)
    mean, std = smooth.mean(), smooth.std()
    for row in table.itertuples():
        z0, y0, x0 = (int(round(v)) - 6 for v in (row.z, row.y, row.x))
        expected = (smooth[z0:z0 + 12, y0:y0 + 12, x0:x0 + 12] - mean) / std
        np.testing.assert_allclose(stack[row.patch], expected, rtol=1e-4, atol=1e-4)
    assert zarr.open_array(str(tmp_path / "p.zarr"), mode="r").attrs["lowpass_sigma"] == sigma
