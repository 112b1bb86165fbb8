"""method watershed: touching particles split, chunk-independent, clear errors."""

from __future__ import annotations

import cc3d
import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest

from deepict_dask.errors import DeepictError, InputError
from deepict_dask.evaluate.picking import evaluate_picks
from deepict_dask.pick import stats as st
from deepict_dask.pick.label import BlockSpec, build_pass, label_image
from deepict_dask.pick.methods import METHODS
from deepict_dask.pick.methods.watershed import split_params, split_volume
from deepict_dask.pick.seeds import find_seeds
from tests.helpers import mrc_file


def touching_spheres(shape=(64, 64, 64), radius=5.0, n=90, spacing=1.8, seed=0):
    """Label map of ``n`` spheres whose centres are at least ``spacing * radius`` apart (they
    overlap slightly, so most touch a neighbour), and the true centres (z, y, x)."""
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    for _ in range(50 * n):
        c = rng.uniform(radius + 1, np.asarray(shape) - radius - 1)
        if all(np.sum((c - d) ** 2) >= (spacing * radius) ** 2 for d in centres):
            centres.append(c)
            if len(centres) == n:
                break
    lab = np.zeros(shape, np.uint32)
    r = int(np.ceil(radius))
    for i, c in enumerate(centres):
        lo = np.maximum(np.floor(c).astype(int) - r, 0)
        hi = np.minimum(np.floor(c).astype(int) + r + 2, shape)
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2
        sub = lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        sub[ball & (sub == 0)] = i + 1
    return lab, np.asarray(centres)


def run_blockwise(prob: np.ndarray, method: str, params: dict, chunks, threshold=0.5, with_image=False):
    """The pick stage's block pass + merge for one clustering method (table, partials, luts[, image])."""
    arr = da.from_array(prob, chunks=chunks)
    spec = BlockSpec(threshold=threshold)
    _, parts, pairs, ctxs = build_pass(arr, None, METHODS[method], spec, params, None, (1.0, 1.0, 1.0))
    parts, pairs = dask.compute(parts, pairs, scheduler="sync")
    table, luts = st.merge_partials(parts, pairs)
    if not with_image:
        return table, parts, luts
    lut_by_block = {b: np.concatenate([[0], lut]) for b, lut in zip(ctxs, luts)}
    img = label_image(arr, None, METHODS[method], ctxs, lut_by_block, len(table)).compute(scheduler="sync")
    return table, parts, luts, img


def recovered(table: pd.DataFrame, centres: np.ndarray, tolerance: float = 2.5) -> dict:
    truth = pd.DataFrame({"z": centres[:, 0], "y": centres[:, 1], "x": centres[:, 2]})
    return evaluate_picks(table[["x", "y", "z"]], truth, tolerance, unit="vox").metrics


@pytest.fixture(scope="module")
def spheres():
    return touching_spheres()


def test_watershed_splits_touching_spheres_where_cc_merges(spheres):
    lab, centres = spheres
    prob = (lab > 0).astype(np.float32)
    params = split_params("watershed", min_distance=4, voxel_size=(1, 1, 1), shape=lab.shape)
    cc, _, _ = run_blockwise(prob, "cc", {}, 32)
    ws, _, _ = run_blockwise(prob, "watershed", params, 32)
    m_cc, m_ws = recovered(cc, centres), recovered(ws, centres)
    print(f"\n{len(centres)} touching spheres: connected components recover {m_cc['tp']} "
          f"(recall {m_cc['recall']:.2f}), watershed {m_ws['tp']} (recall {m_ws['recall']:.2f}, "
          f"precision {m_ws['precision']:.2f})")
    assert m_ws["recall"] >= 0.95 and m_ws["precision"] >= 0.95
    assert m_cc["recall"] < 0.5
    # every foreground voxel belongs to exactly one basin
    assert ws["size"].sum() == int((lab > 0).sum())


def test_watershed_is_independent_of_chunking(spheres):
    lab, _ = spheres
    prob = (lab > 0).astype(np.float32)
    params = split_params("watershed", min_distance=4, voxel_size=(1, 1, 1), shape=lab.shape)
    ref, _, _, img_ref = run_blockwise(prob, "watershed", params, 64, with_image=True)
    for chunks in ((22, 33, 17),):
        other, _, _, img = run_blockwise(prob, "watershed", params, chunks, with_image=True)
        pd.testing.assert_frame_equal(ref, other)
        np.testing.assert_array_equal(img_ref, img)
    # the in-memory reference gives the same partition (labels are renumbered)
    labels, _, _ = split_volume(prob, 0.5, params)
    assert labels.max() == len(ref)
    pairs = np.unique(np.stack([labels[labels > 0], img_ref[labels > 0]]), axis=1)
    assert pairs.shape[1] == len(ref)


def test_prob_seeds_split_blurred_spheres(spheres):
    from scipy import ndimage

    lab, centres = spheres
    # a network-like map: soft edges, touching particles joined above threshold
    prob = np.clip(ndimage.gaussian_filter((lab > 0).astype(np.float32), 1.5) * 1.15, 0, 1)
    params = split_params("watershed", min_distance=4, voxel_size=(1, 1, 1), shape=lab.shape, seeds="prob")
    ws, _, _ = run_blockwise(prob, "watershed", params, 32, threshold=0.4)
    cc, _, _ = run_blockwise(prob, "cc", {}, 32, threshold=0.4)
    m_ws, m_cc = recovered(ws, centres), recovered(cc, centres)
    print(f"\nblurred map: cc recall {m_cc['recall']:.2f}, watershed(prob seeds) recall {m_ws['recall']:.2f}")
    assert m_ws["recall"] >= 0.9 and m_ws["recall"] > m_cc["recall"] + 0.3


def test_h_maxima_ignores_shallow_peaks():
    zz, yy, xx = np.indices((24, 24, 40))
    big = np.exp(-((zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) / (2 * 4.0**2))
    for amp, expected in ((0.15, 1), (0.3, 2)):  # dynamics of the side peak: ~0.11 and ~0.25
        bump = amp * np.exp(-((zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 26) ** 2) / (2 * 1.5**2))
        img = (big + bump).astype(np.float32)
        allowed = img > 0.01
        plain, _ = find_seeds(img, allowed, (4, 4, 4))
        h, _ = find_seeds(img, allowed, (4, 4, 4), h=0.2)
        assert len(plain) == 2 and len(h) == expected
        # per-cluster evaluation (what the blocks do) agrees with the whole-image one
        per_cluster, _ = find_seeds(img, allowed, (4, 4, 4), h=0.2, comp=cc3d.connected_components(allowed))
        np.testing.assert_array_equal(per_cluster, h)
        np.testing.assert_array_equal(h[0], [12, 12, 12])


def test_seeds_respect_min_distance_and_ties():
    img = np.zeros((9, 9, 40), np.float32)
    img[4, 4, 5:15] = 1.0  # a plateau gives exactly one seed, at its lowest raster index
    img[4, 4, 30] = 0.5  # a separate, lower peak further than min-distance
    img[4, 4, 18] = 0.9  # a lower peak closer than min-distance to the plateau: suppressed
    seeds, gidx = find_seeds(img, img > 0, (6, 6, 6))
    np.testing.assert_array_equal(seeds, [[4, 4, 5], [4, 4, 30]])
    np.testing.assert_array_equal(gidx, np.ravel_multi_index(tuple(seeds.T), img.shape))


def test_fragment_without_seed_is_kept():
    # a thin rim whose only maximum is outside the crop would otherwise be lost: every foreground
    # voxel must end up in some cluster, even with a tiny min-distance
    lab, _ = touching_spheres((32, 32, 32), n=12, seed=3)
    prob = (lab > 0).astype(np.float32)
    params = split_params("watershed", min_distance=2, voxel_size=(1, 1, 1), shape=lab.shape)
    table, _, _ = run_blockwise(prob, "watershed", params, 8)
    assert table["size"].sum() == int((lab > 0).sum())


@pytest.mark.parametrize("value", [0, "0A", -3])
def test_min_distance_zero_is_an_error(value):
    with pytest.raises(DeepictError, match="min_distance"):
        split_params("watershed", min_distance=value, voxel_size=(10, 10, 10), shape=(32, 32, 32))


def test_min_distance_larger_than_volume_is_an_error():
    with pytest.raises(DeepictError, match="larger than the volume"):
        split_params("watershed", min_distance="400A", voxel_size=(10, 10, 10), shape=(32, 32, 32))


def test_min_distance_units():
    p = split_params("watershed", min_distance="80A", voxel_size=(10, 10, 10), shape=(32, 32, 32))
    assert p["min_distance_vox"] == (8.0, 8.0, 8.0)
    assert split_params("watershed", min_distance=6, voxel_size=(10, 10, 10), shape=(32, 32, 32))["min_distance_vox"] \
        == (6.0, 6.0, 6.0)  # bare numbers are voxels at this level
    with pytest.raises(DeepictError, match="needs min_distance"):
        split_params("watershed", min_distance=None, voxel_size=(10, 10, 10), shape=(32, 32, 32))
    with pytest.raises(DeepictError, match="cannot read the length"):
        split_params("watershed", min_distance="eighty", voxel_size=(10, 10, 10), shape=(32, 32, 32))


def test_prob_seeds_on_a_binary_mask_say_what_is_needed(spheres):
    lab, _ = spheres
    params = split_params("watershed", min_distance=4, voxel_size=(1, 1, 1), shape=lab.shape, seeds="prob")
    with pytest.raises(InputError, match="needs a probability map.*binary mask"):
        split_volume((lab > 0).astype(np.float32), 0.5, params)


def test_pick_api_watershed_same_columns_as_cc(spheres):
    from deepict_dask.io.volume import make_volume
    from deepict_dask.options import build
    from deepict_dask.pick.api import pick
    from deepict_dask.pick.options import PickOptions

    lab, centres = spheres
    vol = make_volume((lab > 0).astype(np.float32), (10.0, 10.0, 10.0), chunks=32)
    cc = pick(vol, PickOptions(method="cc")).table
    ws = pick(vol, PickOptions(method={"name": "watershed", "min_distance": "40A"})).table
    assert list(ws.columns) == list(cc.columns)
    assert recovered(ws, centres)["recall"] >= 0.95
    # default seed distance from the expected particle radius; other chunking, same picks
    by_radius = pick(vol, PickOptions(method="watershed", radius="50A"), chunks=24).table
    assert len(by_radius) == len(centres)
    with pytest.raises(DeepictError, match="^method.min_distance: must be > 0"):
        build(PickOptions, {"method": {"name": "watershed", "min_distance": 0}})
    with pytest.raises(DeepictError, match="^method.min_distanse: unknown key"):
        build(PickOptions, {"method": {"name": "watershed", "min_distanse": 4}})
    with pytest.raises(DeepictError, match="needs min_distance"):
        pick(vol, PickOptions(method="watershed"))


def test_cli_cluster_watershed(spheres, tmp_path, monkeypatch, capsys):
    import contextlib

    import deepict_dask.cluster
    from deepict_dask.cli.main import main
    from deepict_dask.io.coords import read_table

    # run in-process on the local scheduler (no LocalCluster in a unit test)
    monkeypatch.setattr(deepict_dask.cluster, "dask_client", lambda *a, **k: contextlib.nullcontext())
    lab, centres = spheres
    path = tmp_path / "mask.mrc"
    mrc_file(path, (lab > 0).astype(np.float32), 10.0)
    out = tmp_path / "picks.csv"
    assert main(["pick", str(path), "--out", str(out), "--method", "watershed", "--min-distance", "40A",
                 "--no-progress"]) == 0
    table = read_table(out)
    assert recovered(table, centres)["recall"] >= 0.95
    assert main(["pick", str(path), "--out", str(out), "--method", "peaks", "--min-distance", "4",
                 "--no-progress", "--overwrite"]) == 2  # a binary mask: says a probability map is needed
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepict pick: error:") and "probability map" in err and len(err.splitlines()) == 1


def test_pick_api_watershed_coarsen(spheres):
    from deepict_dask.io.volume import make_volume
    from deepict_dask.pick.api import pick

    lab, centres = spheres
    vol = make_volume((lab > 0).astype(np.float32), (10.0, 10.0, 10.0), chunks=32)
    from deepict_dask.options import build
    from deepict_dask.pick.options import PickOptions

    with pytest.raises(DeepictError, match="coarsen"):
        build(PickOptions, {"method": {"name": "watershed", "min_distance": "40A", "coarsen": 0}})
    coarse = pick(vol, PickOptions(method={"name": "watershed", "min_distance": "40A", "coarsen": 2})).table
    assert recovered(coarse, centres)["recall"] >= 0.9  # seeds 2 cells apart: still one pick each


@pytest.fixture(scope="module")
def big_spheres():
    """Particles 16 voxels wide: seeds 8 apart, so ``coarsen="auto"`` works on a 2x coarser grid."""
    return touching_spheres((64, 64, 64), radius=8.0, n=60, spacing=1.8, seed=2)


def test_coarse_factor_auto_and_checked():
    from deepict_dask.errors import ConfigError
    from deepict_dask.pick.methods.watershed import coarse_factor

    assert coarse_factor(None, (8.2, 8.2, 8.2)) == 2
    assert coarse_factor("auto", (5.0, 5.0, 5.0)) == 1
    assert coarse_factor(None, (12.0, 16.0, 16.0)) == 3
    assert coarse_factor("1", (12.0,) * 3) == 1 and coarse_factor(3, (4.0,) * 3) == 3
    for bad in ("0", 0, "x", 1.5, "-2"):
        with pytest.raises(ConfigError, match="^coarsen must be"):
            coarse_factor(bad, (8.0,) * 3)


def test_coarse_watershed_splits_like_full_resolution_whatever_the_chunking(big_spheres):
    lab, centres = big_spheres
    prob = (lab > 0).astype(np.float32)
    coarse = split_params("watershed", min_distance=8, voxel_size=(1, 1, 1), shape=lab.shape)
    full = split_params("watershed", min_distance=8, voxel_size=(1, 1, 1), shape=lab.shape, coarsen=1)
    assert coarse["coarsen"] == 2 and full["coarsen"] == 1
    cc, _, _ = run_blockwise(prob, "cc", {}, 32)
    ws, _, _, img = run_blockwise(prob, "watershed", coarse, 32, with_image=True)
    ws_full, _, _ = run_blockwise(prob, "watershed", full, 32)
    m_cc, m_ws, m_full = recovered(cc, centres), recovered(ws, centres), recovered(ws_full, centres)
    print(f"\n{len(centres)} touching spheres (radius 8): cc recall {m_cc['recall']:.2f}; watershed 2x coarser "
          f"recall {m_ws['recall']:.2f} precision {m_ws['precision']:.2f}; full resolution recall "
          f"{m_full['recall']:.2f} precision {m_full['precision']:.2f}")
    assert m_ws["recall"] >= 0.95 and m_ws["precision"] >= 0.95 and m_cc["recall"] < 0.5
    assert ws["size"].sum() == int((lab > 0).sum())  # every voxel of the full grid, in one basin each
    assert set(np.unique(img[lab == 0])) == {0}
    # the same partition for other chunkings (the coarse grid is anchored to the volume)
    for chunks in ((22, 33, 17), 64):
        other, _, _, img2 = run_blockwise(prob, "watershed", coarse, chunks, with_image=True)
        pd.testing.assert_frame_equal(ws, other)
        np.testing.assert_array_equal(img, img2)
    # and the in-memory reference agrees
    labels, _, _ = split_volume(prob, 0.5, coarse)
    pairs = np.unique(np.stack([labels[labels > 0], img[labels > 0]]), axis=1)
    assert labels.max() == len(ws) and pairs.shape[1] == len(ws)
