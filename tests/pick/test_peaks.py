"""method peaks: local maxima with non-maximum suppression, scored by peak value."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepict_dask.errors import DeepictError, InputError
from deepict_dask.pick.methods.peaks import find_peaks, peak_rows
from deepict_dask.pick.methods.watershed import split_params
from tests.pick.test_watershed import recovered, run_blockwise, touching_spheres


@pytest.fixture(scope="module")
def blurred():
    lab, centres = touching_spheres((48, 48, 48), n=40, seed=1)
    prob = np.clip(ndimage.gaussian_filter((lab > 0).astype(np.float32), 1.5) * 1.15, 0, 1)
    return prob, centres


def test_peaks_find_touching_particles(blurred):
    prob, centres = blurred
    params = split_params("peaks", min_distance=4, voxel_size=(1, 1, 1), shape=prob.shape)
    table = find_peaks(prob, 0.4, params)
    m = recovered(table, centres, tolerance=2.0)
    print(f"\npeaks on {len(centres)} touching blurred spheres: recall {m['recall']:.2f}, precision {m['precision']:.2f}")
    assert m["recall"] >= 0.95 and m["precision"] >= 0.9
    # score is the peak value, size the basin: basins partition the foreground
    assert np.all(table["score"] >= 0.4) and np.all(table["score"] <= prob.max())
    assert table["size"].sum() == int((prob >= 0.4).sum())
    # peaks are at least min-distance apart
    from scipy.spatial import cKDTree

    assert len(cKDTree(table[["z", "y", "x"]].to_numpy()).query_pairs(4.0 - 1e-6)) == 0


def test_blockwise_peaks_match_in_memory(blurred):
    prob, _ = blurred
    params = split_params("peaks", min_distance=4, voxel_size=(1, 1, 1), shape=prob.shape)
    ref = find_peaks(prob, 0.4, params).sort_values(["z", "y", "x"]).reset_index(drop=True)
    for chunks in (48, (16, 24, 24)):
        table, parts, luts = run_blockwise(prob, "peaks", params, chunks, threshold=0.4)
        rows = peak_rows(table, parts, luts, prob.shape).sort_values(["z", "y", "x"]).reset_index(drop=True)
        np.testing.assert_array_equal(rows[["z", "y", "x"]].to_numpy(), ref[["z", "y", "x"]].to_numpy())
        np.testing.assert_array_equal(rows["size"].to_numpy(), ref["size"].to_numpy())
        np.testing.assert_allclose(rows["peak"].to_numpy(), ref["score"].to_numpy())


def test_peaks_need_a_probability_map(blurred):
    prob, _ = blurred
    params = split_params("peaks", min_distance=4, voxel_size=(1, 1, 1), shape=prob.shape)
    with pytest.raises(InputError, match="needs a probability map"):
        find_peaks((prob >= 0.4).astype(np.float32), 0.5, params)
    with pytest.raises(InputError, match="needs a probability map"):
        run_blockwise((prob >= 0.4).astype(np.float32), "peaks", params, 24)


def test_peaks_options_are_checked():
    with pytest.raises(DeepictError, match="min_distance"):
        split_params("peaks", min_distance=0, voxel_size=(1, 1, 1), shape=(32, 32, 32))
    with pytest.raises(DeepictError, match="larger than the volume"):
        split_params("peaks", min_distance=40, voxel_size=(1, 1, 1), shape=(32, 32, 32))
    with pytest.raises(DeepictError, match="seeds edt"):
        split_params("peaks", min_distance=4, voxel_size=(1, 1, 1), shape=(32, 32, 32), seeds="edt")
    p = split_params("peaks", min_distance=None, radius="50A", voxel_size=(10, 10, 10), shape=(32, 32, 32))
    assert p["min_distance_vox"] == (5.0, 5.0, 5.0) and p["diameter_vox"] == 10.0


def test_coarse_peaks_keep_full_resolution_positions_and_ignore_chunking():
    """On a 2x coarser grid (auto for seeds 8 apart) peaks are still reported at a voxel of the map,
    the most probable one of the seed's cell, and blocks agree with the in-memory result."""
    lab, centres = touching_spheres((64, 64, 64), radius=8.0, n=60, spacing=1.8, seed=3)
    prob = np.clip(ndimage.gaussian_filter((lab > 0).astype(np.float32), 2.0) * 1.15, 0, 1)
    params = split_params("peaks", min_distance=8, voxel_size=(1, 1, 1), shape=prob.shape)
    assert params["coarsen"] == 2
    ref = find_peaks(prob, 0.4, params)
    m = recovered(ref, centres, tolerance=2.0)
    print(f"\ncoarse peaks on {len(centres)} touching spheres (radius 8): recall {m['recall']:.2f}, "
          f"precision {m['precision']:.2f}")
    assert m["recall"] >= 0.95 and m["precision"] >= 0.95
    pos = ref[["z", "y", "x"]].to_numpy().astype(int)
    assert np.all(prob[tuple(pos.T)] >= 0.4)
    ref = ref.sort_values(["z", "y", "x"]).reset_index(drop=True)
    for chunks in (64, (16, 24, 40)):
        table, parts, luts = run_blockwise(prob, "peaks", params, chunks, threshold=0.4)
        rows = peak_rows(table, parts, luts, prob.shape).sort_values(["z", "y", "x"]).reset_index(drop=True)
        np.testing.assert_array_equal(rows[["z", "y", "x"]].to_numpy(), ref[["z", "y", "x"]].to_numpy())
        np.testing.assert_array_equal(rows["size"].to_numpy(), ref["size"].to_numpy())
