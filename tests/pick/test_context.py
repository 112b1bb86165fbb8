"""Context modes of deepict pick (intersection / contact / colocalization, and their inverse)."""

from __future__ import annotations

import numpy as np
import pytest

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume
from deepict_dask.pick import context
from deepict_dask.pick.api import pick
from deepict_dask.pick.options import PickOptions

VS = 10.0


def _scene():
    """Mask = z < 10. A inside, B straddling the border, C 4 voxels outside, D far outside."""
    vol = np.zeros((20, 16, 40), np.float32)
    vol[2:6, 4:8, 2:6] = 0.9  # A: 64 voxels, centroid z 3.5
    vol[7:13, 4:8, 10:14] = 0.9  # B: 96 voxels, 48 inside the mask
    vol[12:15, 4:8, 20:24] = 0.9  # C: centroid z 13 -> 4 voxels from z=9
    vol[16:19, 4:8, 30:34] = 0.9  # D: centroid z 17 -> 8 voxels away
    mask = np.zeros(vol.shape, bool)
    mask[:10] = True
    return make_volume(vol, VS, chunks=(7, 8, 9)), make_volume(mask, VS, chunks=(5, 16, 40))


def _by_x(table):
    names = {3: "A", 11: "B", 21: "C", 31: "D"}
    return {names[int(round(x))]: row for x, (_, row) in zip(table["x"] - 0.5, table.iterrows())}


def test_intersection_cuts_before_clustering_and_size_filter_sees_masked_clusters():
    v, m = _scene()
    t = _by_x(pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "intersection"}), context_map=m).table)
    assert set(t) == {"A", "B"}
    assert t["B"]["size"] == 48 and t["A"]["size"] == 64
    assert set(_by_x(pick(v, PickOptions(threshold=0.5, min_size=50, context={"target": "mask", "mode": "intersection"}), context_map=m).table)) == {"A"}
    inv = _by_x(pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "intersection", "invert": True}), context_map=m).table)
    assert set(inv) == {"B", "C", "D"} and inv["B"]["size"] == 48


def test_contact_keeps_whole_clusters_touching_the_mask():
    v, m = _scene()
    t = _by_x(pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "contact"}), context_map=m).table)
    assert set(t) == {"A", "B"} and t["B"]["size"] == 96 and t["B"]["context_voxels"] == 48
    assert set(_by_x(pick(v, PickOptions(threshold=0.5, min_size=70, context={"target": "mask", "mode": "contact"}), context_map=m).table)) == {"B"}
    inv = pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "contact", "invert": True}), context_map=m).table
    assert set(_by_x(inv)) == {"C", "D"}


def test_colocalization_by_centroid_distance_in_voxels_or_angstrom():
    v, m = _scene()
    t = _by_x(pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "colocalization", "distance": "4vx"}), context_map=m).table)
    assert set(t) == {"A", "B", "C"}
    assert t["A"]["context_distance_A"] == 0 and t["C"]["context_distance_A"] == pytest.approx(40.0)
    assert set(_by_x(pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "colocalization", "distance": "39A"}), context_map=m).table)) == {"A", "B"}
    inv = pick(v, PickOptions(threshold=0.5, context={"target": "mask", "mode": "colocalization", "distance": "4vx", "invert": True}), context_map=m).table
    assert set(_by_x(inv)) == {"D"}
    assert _by_x(inv)["D"]["context_distance_A"] == pytest.approx(80.0)


def test_distance_beyond_reach_uses_coarse_transform():
    mask = np.zeros((40, 40, 40), bool)
    mask[:4] = True
    m = make_volume(mask, VS, chunks=10).data
    pts = np.array([[5.0, 20, 20], [30.0, 20, 20]])
    exact = context.distance_to_region(m, pts, (VS,) * 3, reach_A=300.0)
    np.testing.assert_allclose(exact, [20.0, 270.0])
    coarse = context.distance_to_region(m, pts, (VS,) * 3, reach_A=50.0)
    assert coarse[0] == 20.0 and abs(coarse[1] - 270.0) <= np.sqrt(3) * VS


def test_mask_of_another_shape_or_voxel_size_is_refused():
    v, m = _scene()
    with pytest.raises(InputError, match="shape"):
        pick(v, PickOptions(context={"target": "mask", "mode": "contact"}),
             context_map=make_volume(np.zeros((20, 16, 39), bool), VS))
    with pytest.raises(InputError, match="voxel size"):
        pick(v, PickOptions(context={"target": "mask", "mode": "contact"}),
             context_map=make_volume(np.zeros((20, 16, 40), bool), 12.0))
    with pytest.raises(ValueError, match="colocalization needs a distance"):
        PickOptions(context={"target": "mask", "mode": "colocalization"})
