"""k-means on codes: reproducible, fed slice by slice, clear errors, choose_k scores, assign."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from sklearn.metrics import adjusted_rand_score

from deepict_dask.errors import ConfigError
from deepict_dask.mine import (
    ChooseKOptions,
    ClusterOptions,
    MineLayout,
    assign,
    choose_k,
    cluster_codes,
    score_k,
)
from deepict_dask.mine.kmeans import fit_kmeans, read_centres


def _codes(n_per=200, k=4, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, d))
    truth = np.repeat(np.arange(k), n_per)
    return (centres[truth] + rng.normal(0, 1, (len(truth), d))).astype(np.float32), truth


class CountingArray:
    """A codes array that records which slices were read (to show partial_fit is fed slice by slice)."""

    def __init__(self, data):
        self.data, self.shape, self.reads = data, data.shape, []

    def __getitem__(self, sl):
        self.reads.append(sl.stop - sl.start)
        return self.data[sl]


def test_fit_is_reproducible_bounded_and_finds_the_groups():
    x, truth = _codes()
    arr = CountingArray(x)
    km = fit_kmeans(arr, ClusterOptions(k=4, seed=3, batch_size=100, epochs=2))
    assert max(arr.reads) == 100 and sum(arr.reads) == 3 * len(x)  # one slice at a time: a sampling pass + 2 epochs
    labels = assign(x, km.cluster_centers_)
    assert adjusted_rand_score(truth, labels) > 0.99
    again = fit_kmeans(x, ClusterOptions(k=4, seed=3, batch_size=100, epochs=2))
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)


def test_slices_hold_at_least_three_k_codes():
    x, _ = _codes(n_per=30)
    arr = CountingArray(x)
    fit_kmeans(arr, ClusterOptions(k=20, batch_size=16, epochs=1))
    assert min(arr.reads) >= 20 and max(arr.reads) >= 60


def test_k_larger_than_the_patches_is_one_error():
    with pytest.raises(ConfigError, match="k = 50 clusters is more than the 40 patches"):
        fit_kmeans(np.zeros((40, 4)), ClusterOptions(k=50))


def test_assign_is_nearest_centre():
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codes = np.array([[1.0, 1.0], [9.0, -1.0], [2.0, 7.0], [5.1, 0.0]])
    assert assign(codes, centres).tolist() == [0, 1, 2, 1]
    with pytest.raises(ConfigError, match="codes have 3 dimensions but the cluster centres 2"):
        assign(np.zeros((2, 3)), centres)


def test_cluster_codes_writes_labels_and_centres(tmp_path):
    x, truth = _codes()
    layout = MineLayout.at(tmp_path)
    zarr.create_array(str(layout.codes), shape=x.shape, chunks=(128, 8), dtype="float32")[:] = x
    labels = cluster_codes(layout, ClusterOptions(k=4, batch_size=256))
    assert adjusted_rand_score(truth, labels) > 0.99
    np.testing.assert_array_equal(zarr.open_array(str(layout.labels), mode="r")[:], labels)
    assert read_centres(layout.cluster_centres).shape == (4, 8)


def test_choose_k_reports_both_indices(tmp_path):
    x, _ = _codes(n_per=60)
    scores = choose_k(x, ChooseKOptions(ks=(2, 4, 8), sample=240, references=2))
    assert scores["k"].tolist() == [2, 4, 8]
    assert scores["calinski_harabasz"].idxmax() == 1  # 4 well separated groups
    assert scores.loc[1, "gap"] > scores.loc[0, "gap"]
    layout = MineLayout.at(tmp_path)
    zarr.create_array(str(layout.codes), shape=x.shape, chunks=(100, 8), dtype="float32")[:] = x
    score_k(layout, ChooseKOptions(ks=(2, 4), sample=100, references=2))
    assert layout.choose_k_plot.read_bytes()[:4] == b"\x89PNG"
    assert layout.choose_k_table.read_text().startswith("k,calinski_harabasz,gap,gap_sd")
    with pytest.raises(ConfigError, match="k = 300 is not below the 240 sampled codes"):
        choose_k(x, ChooseKOptions(ks=(300,)))
