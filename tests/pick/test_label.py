"""Global connected components and per-cluster statistics (deepict pick, issue 7)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from deepict_dask.io.volume import make_volume
from deepict_dask.pick import filters, label, stats
from deepict_dask.pick.api import pick
from deepict_dask.pick.methods import METHODS
from deepict_dask.pick.options import PickOptions

STRUCTURES = {6: ndi.generate_binary_structure(3, 1), 18: ndi.generate_binary_structure(3, 2), 26: np.ones((3, 3, 3))}


def _blobs(shape=(17, 19, 21), sigma=0.8, seed=0) -> np.ndarray:
    vol = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return ((vol - vol.min()) / (vol.max() - vol.min())).astype(np.float32)


def _label(vol: np.ndarray, chunks, connectivity: int, threshold: float):
    arr = da.from_array(vol, chunks=chunks)
    spec = label.BlockSpec(threshold=threshold, connectivity=connectivity)
    ids, parts, pairs, ctxs = label.build_pass(arr, None, METHODS["cc"], spec, {}, None, (1.0, 1.0, 1.0))
    parts, pairs = dask.compute(parts, pairs, scheduler="sync")
    table, luts = stats.merge_partials(parts, pairs)
    lut = {b: np.concatenate([[0], lt]) for b, lt in zip(ids, luts)}
    img = label.label_image(arr, None, METHODS["cc"], ctxs, lut, len(table)).compute(scheduler="sync")
    return table, img


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("chunks", [(17, 19, 21), (5, 5, 5), (7, 9, 11), (3, 4, 2), (1, 19, 21), (17, 1, 3)])
def test_labels_and_centroids_match_scipy_for_any_chunking(connectivity, chunks):
    vol = _blobs()
    fg = vol >= 0.55
    ref, n = ndi.label(fg, STRUCTURES[connectivity])
    table, img = _label(vol, chunks, connectivity, 0.55)
    assert n > 3
    assert len(table) == n
    np.testing.assert_array_equal(img, ref)  # same numbering: raster order of first voxel
    idx = np.arange(1, n + 1)
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(), np.array(ndi.center_of_mass(fg, ref, idx)), atol=1e-9)
    np.testing.assert_allclose(table[["wz", "wy", "wx"]].to_numpy(), np.array(ndi.center_of_mass(vol * fg, ref, idx)), atol=1e-6)
    np.testing.assert_array_equal(table["size"], ndi.sum_labels(fg, ref, idx))
    np.testing.assert_allclose(table["max_prob"], ndi.maximum(vol, ref, idx), rtol=1e-6)
    np.testing.assert_allclose(table["mean_prob"], ndi.mean(vol, ref, idx), rtol=1e-5)
    boxes = ndi.find_objects(ref)
    np.testing.assert_array_equal(table["zmin"], [b[0].start for b in boxes])
    np.testing.assert_array_equal(table["xmax"], [b[2].stop - 1 for b in boxes])


@pytest.mark.parametrize("connectivity", [6, 26])
def test_single_voxel_chunks(connectivity):
    vol = _blobs((6, 7, 8), sigma=0.7, seed=3)
    ref, n = ndi.label(vol >= 0.5, STRUCTURES[connectivity])
    table, img = _label(vol, (1, 1, 1), connectivity, 0.5)
    assert len(table) == n
    np.testing.assert_array_equal(img, ref)


def test_matches_dask_image_oracle():
    from dask_image import ndmeasure

    vol = _blobs((12, 12, 12), sigma=1.0, seed=5)
    arr = da.from_array(vol >= 0.55, chunks=(6, 7, 12))
    ref, n = ndmeasure.label(arr, structure=STRUCTURES[26])
    ref = ref.compute(scheduler="sync")
    _, img = _label(vol, (6, 7, 12), 26, 0.55)
    # dask-image numbers differently; the partitions must be identical
    pairs = np.unique(np.stack([img.ravel(), ref.ravel()]), axis=1)
    assert int(n) == img.max() == pairs.shape[1] - 1


def test_pick_api_uint8_scaling_and_weighted_centroid():
    vol = _blobs((20, 20, 20), sigma=1.0, seed=1)
    u8 = np.round(vol * 255).astype(np.uint8)
    res = pick(make_volume(u8, 8.0, chunks=7), PickOptions(threshold=0.6, connectivity=26, weighted=True))
    fg = u8 >= np.float32(0.6) * 255 - 1e-3
    ref, n = ndi.label(u8.astype(np.float32) / 255 >= 0.6, STRUCTURES[26])
    assert len(res.table) == n
    com = np.array(ndi.center_of_mass(u8.astype(np.float64) * (ref > 0), ref, np.arange(1, n + 1)))
    np.testing.assert_allclose(res.table[["z", "y", "x"]].to_numpy(), com, atol=1e-6)
    np.testing.assert_allclose(res.table["x_A"], res.table["x"] * 8.0)
    assert fg.any()


def test_size_filter_is_inclusive():
    vol = np.zeros((10, 10, 30), np.float32)
    vol[2, 2, 0:3] = 1  # 3 voxels
    vol[5, 5, 10:15] = 1  # 5 voxels
    vol[8, 8, 20:27] = 1  # 7 voxels
    v = make_volume(vol, 1.0, chunks=4)
    sizes = lambda **kw: sorted(pick(v, PickOptions(**kw)).table["size"].astype(int).tolist())  # noqa: E731
    assert sizes(min_size=3, max_size=7) == [3, 5, 7]
    assert sizes(min_size=4, max_size=6) == [5]
    assert sizes(min_size=5, max_size=5) == [5]


def test_size_range_from_radius():
    lo, hi = filters.size_range_from_radius(50.0, (10.0, 10.0, 10.0))
    assert lo == int(0.2 * 4 / 3 * np.pi * 125) and hi == int(np.ceil(2.0 * 4 / 3 * np.pi * 125))


def test_duplicates_keep_higher_score_and_ellipse():
    pts = np.array([[0, 0, 0], [0, 0, 5], [0, 0, 30], [8, 0, 30]], float)
    score = np.array([0.5, 0.9, 0.7, 0.6])
    np.testing.assert_array_equal(filters.remove_duplicates(pts, score, 10.0), [False, True, True, False])
    # elliptic: long along z (first axis) merges the z-neighbours only
    np.testing.assert_array_equal(filters.remove_duplicates(pts, score, (10.0, 1.0, 1.0)), [True, True, True, False])


def test_duplicate_radius_in_pick():
    vol = np.zeros((12, 12, 40), np.float32)
    vol[6, 6, 5:8] = 0.9
    vol[6, 6, 10:12] = 0.7  # 4 voxels away from the first: a duplicate at 6 voxels
    vol[6, 6, 30:33] = 0.8
    res = pick(make_volume(vol, 10.0, chunks=8), PickOptions(threshold=0.5, duplicate_radius="60A"))
    assert sorted(res.table["score"].round(2).tolist()) == [0.8, 0.9]


def test_many_clusters_group_by():
    # 4,096 isolated voxels on a lattice across 64 chunks: one row each, no per-label loop needed
    vol = np.zeros((32, 32, 32), np.float32)
    vol[::2, ::2, ::2] = 0.9
    res = pick(make_volume(vol, 1.0, chunks=8), PickOptions(threshold=0.5, connectivity=6))
    assert len(res.table) == 16**3
    assert set(res.table["size"]) == {1.0}


def test_multiclass_majority():
    # softmax map: background + two classes; one blob mostly class a with a rim of b
    shape = (16, 16, 24)
    bg = np.ones(shape, np.float32)
    a = np.zeros(shape, np.float32)
    b = np.zeros(shape, np.float32)
    a[4:10, 4:10, 2:8] = 0.8
    b[4:10, 4:10, 8:10] = 0.8  # touching rim of class b, smaller
    b[4:10, 4:10, 16:20] = 0.9
    bg -= a + b
    maps = np.stack([bg, a, b])
    v = make_volume(maps, 10.0, channels=["background", "a", "b"], chunks=(3, 8, 8, 8))
    res = pick(v, PickOptions(threshold=0.5))
    t = res.table.sort_values("x")
    assert t["class"].tolist() == ["a", "b"]
    assert t["size"].tolist() == [288.0, 144.0]
    np.testing.assert_allclose(t["class_fraction"].iloc[0], 216 / 288)
    only_b = pick(v, PickOptions(threshold=0.5), classes=["b"]).table
    assert only_b["class"].tolist() == ["b"]


def test_meanshift_splits_touching_particles_across_blocks():
    z, y, x = np.mgrid[:30, :30, :50]
    vol = np.zeros((30, 30, 50), np.float32)
    for c in [(15, 15, 12), (15, 15, 20), (15, 15, 38)]:  # the first two touch
        vol = np.maximum(vol, ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 25) * 0.9)
    v = make_volume(vol, 10.0, chunks=(15, 15, 16))
    assert len(pick(v, PickOptions(threshold=0.5)).table) == 2
    res = pick(v, PickOptions(threshold=0.5, method={"name": "meanshift", "bandwidth": "50A"}))
    np.testing.assert_allclose(np.sort(res.table["x"]), [12, 20, 38], atol=0.5)


def test_centerline_of_a_helix():
    z, y, x = np.mgrid[:40, :48, :48]
    t = np.linspace(0, 4 * np.pi, 600)
    vol = np.zeros((40, 48, 48), np.float32)
    cz, cy, cx = 4 + t * 32 / (4 * np.pi), 24 + 12 * np.cos(t), 24 + 12 * np.sin(t)
    for a, b, c in zip(cz[::3], cy[::3], cx[::3]):
        vol[(z - a) ** 2 + (y - b) ** 2 + (x - c) ** 2 <= 4] = 0.9
    res = pick(make_volume(vol, 10.0, chunks=24), PickOptions(threshold=0.5, centerline=True, spacing="40A"))
    tab = res.table
    length = np.sum(np.linalg.norm(np.diff(np.stack([cz, cy, cx], 1), axis=0), axis=1)) * 10
    assert abs(len(tab) - length / 40) <= 0.15 * length / 40
    # every sample is on the helix axis and its direction is the tangent
    pts = tab[["z", "y", "x"]].to_numpy()
    curve = np.stack([cz, cy, cx], 1)
    d = np.linalg.norm(pts[:, None] - curve[None], axis=2)
    assert d.min(axis=1).max() < 1.5
    nearest = d.argmin(axis=1)
    tangent = np.gradient(curve, axis=0)[nearest]
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    cos = np.abs(np.sum(tangent * tab[["dir_z", "dir_y", "dir_x"]].to_numpy(), axis=1))
    assert np.median(cos) > 0.95
    steps = np.linalg.norm(np.diff(tab[["z_A", "y_A", "x_A"]].to_numpy(), axis=0), axis=1)
    assert np.median(steps) == pytest.approx(40, rel=0.1)
