"""Patch centres: DoG peaks identical whatever the chunking, grid mode, options, bad input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from pydantic import ValidationError

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume
from deepict_dask.mine import CentreOptions, find_centres
from deepict_dask.mine.centres import dog_peaks, grid_points, volume_centres
from tests.mine.conftest import blob_volume

BLOBS = ((20, 20, 20), (32, 40, 15), (45, 31, 50))


def test_dog_finds_the_blobs_strongest_first():
    zyx, score = dog_peaks(da.from_array(blob_volume(), chunks=64), CentreOptions(max_peaks=3))
    assert sorted(map(tuple, zyx.tolist())) == sorted(BLOBS)
    assert np.all(np.diff(score) <= 0)


def test_peaks_identical_whatever_the_chunking():
    # a blob exactly on a block border (z = y = x = 32 with blocks of 32 and 16) and two ties
    vol = blob_volume(centres=((32, 32, 32), (20, 45, 12), (50, 16, 48)), noise=0.5, seed=3)
    vol[5, 5, 5] = vol[5, 5, 59] = -40.0  # two equal isolated spikes: the tie must resolve the same way
    results = []
    # blocks of the whole volume, of 32 (a peak on the corner of 8 blocks), of 40; the last one from a derived
    # (not stored) dask array with irregular chunks, read through dask instead of the file
    for data, block in ((da.from_array(vol, chunks=64), 128), (da.from_array(vol, chunks=32), 32),
                        (da.from_array(vol, chunks=(20, 25, 19)) * 1.0, 40)):
        zyx, score = dog_peaks(data, CentreOptions(block=block, min_distance=8))
        results.append((zyx, score))
    ref = results[0]
    assert len(ref[0]) > 10
    assert any((row == [32, 32, 32]).all() for row in ref[0])
    for zyx, score in results[1:]:
        np.testing.assert_array_equal(zyx, ref[0])
        np.testing.assert_array_equal(score, ref[1])
    # min_distance holds between every pair of kept peaks
    d = np.linalg.norm(ref[0][:, None] - ref[0][None], axis=-1)
    assert d[np.triu_indices(len(d), 1)].min() >= 8


def test_threshold_polarity_and_no_peaks():
    vol = make_volume(blob_volume(), voxel_size=10.0)
    strong = volume_centres(vol, "t", CentreOptions(threshold=0.05))
    assert len(strong) == 3 and set(strong["class"]) == {"dog"}
    np.testing.assert_allclose(strong["x_A"], strong["x"] * 10.0)
    with pytest.raises(InputError, match="t: no Difference-of-Gaussians peaks above threshold"):
        volume_centres(vol, "t", CentreOptions(threshold=100.0))
    bright = volume_centres(make_volume(-blob_volume(), voxel_size=10.0), "t", CentreOptions(polarity="bright", threshold=0.05))
    assert sorted(map(tuple, bright[["z", "y", "x"]].to_numpy(int).tolist())) == sorted(BLOBS)


def test_grid_mode_fits_patches():
    pts = grid_points((64, 40, 33), 16, (32, 16, 16))
    assert pts[:, 0].tolist()[:2] == [16, 16] and pts[:, 0].max() == 48  # 16 .. 48: patch 0..32 .. 32..64
    assert pts[:, 2].max() + 8 <= 33
    with pytest.raises(InputError, match="no grid point fits"):
        volume_centres(make_volume(np.zeros((8, 64, 64), np.float32)), "flat", CentreOptions(method="grid"))


def test_find_centres_on_files(blob_mrc, tmp_path):
    path = blob_mrc("tomoA")
    table = find_centres([path], CentreOptions(max_peaks=3), out=tmp_path / "c.csv")
    assert set(table["tomo"]) == {"tomoA"} and len(table) == 3
    assert (tmp_path / "c.csv").is_file()


def test_options_are_checked():
    with pytest.raises(ValidationError):
        CentreOptions(dog_k=1.0)
    with pytest.raises(ValidationError):
        CentreOptions(min_dist=3)  # unknown key


def test_near_tie_between_close_blobs_resolves_the_same_in_every_chunking():
    # noise-free, mirror-symmetric: two equal blobs 7 voxels apart across a block border (x = 32)
    vol = blob_volume(centres=((32, 32, 28), (32, 32, 35)), noise=0.0)
    kept = []
    for block in (128, 32, 40):
        zyx, _ = dog_peaks(da.from_array(vol, chunks=32), CentreOptions(block=block, max_peaks=1))
        kept.append(zyx.tolist())
    assert kept[0] == kept[1] == kept[2]
    assert kept[0][0][:2] == [32, 32] and kept[0][0][2] in (31, 32)  # the merged response peaks midway
