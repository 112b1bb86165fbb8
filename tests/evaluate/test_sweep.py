"""Threshold x min-size sweep on a synthetic map with known particles and noise blobs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import InputError
from deepict_dask.evaluate.sweep import cluster_stats, grid_edges, sweep
from deepict_dask.io.volume import make_volume
from tests.helpers import mrc_file


def synthetic(shape=(40, 48, 48)):
    """Big bright spheres at the truth positions, small bright specks and dim large blobs elsewhere."""
    zz, yy, xx = np.indices(shape)
    prob = np.zeros(shape, np.float32)
    truth = [(8, 10, 10), (8, 30, 36), (28, 12, 30), (30, 36, 12)]
    for z, y, x in truth:
        prob[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 9] = 0.9  # 123 voxels
    for z, y, x in [(20, 24, 24), (34, 40, 40)]:
        prob[z, y, x] = 0.95  # single-voxel false positives
    prob[(zz - 18) ** 2 + (yy - 40) ** 2 + (xx - 8) ** 2 <= 9] = 0.3  # dim false positive
    df = pd.DataFrame({"tomo": "tomo1", "class": "ribo", "x": [t[2] for t in truth], "y": [t[1] for t in truth], "z": [t[0] for t in truth]})
    for a in "xyz":
        df[f"{a}_A"] = df[a] * 10.0
    return prob, df


def test_cluster_stats_and_sweep_best_setting():
    prob, truth = synthetic()
    vol = make_volume(prob, voxel_size=10.0, chunks=16)
    st = cluster_stats(vol, 0.5)
    assert len(st) == 6 and sorted(st["size"].tolist())[:2] == [1.0, 1.0]
    res = sweep({"tomo1": vol}, truth, 2.0, thresholds=[0.2, 0.5], min_sizes=[1, 50])
    grid = {(r["threshold"], r["min_size"]): r for r in res["grid"]}
    assert grid[(0.2, 1)]["fp"] == 3 and grid[(0.5, 1)]["fp"] == 2
    assert grid[(0.5, 50)]["f1"] == 1.0 and grid[(0.2, 50)]["fp"] == 1
    assert (res["best_threshold"], res["best_min_size"], res["f1"]) == (0.5, 50, 1.0)
    assert res["per_class"]["particle"]["tp"] == 4


def test_sweep_errors_and_cli(tmp_path, capsys):
    prob, truth = synthetic()
    vol = make_volume(prob)
    with pytest.raises(InputError, match="no truth for tomogram"):
        sweep({"other": vol}, truth, 2.0, thresholds=[0.5], min_sizes=[1])
    mpath = tmp_path / "tomo1.mrc"
    mrc_file(mpath, prob, 10.0)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "sweep.json"
    rc = main(["evaluate", "sweep", "--pred", str(mpath), "--truth", str(tmp_path / "truth.csv"), "--tolerance", "20",
               "--unit", "A", "--thresholds", "0.2:0.6:0.2", "--min-sizes", "1,50", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["f1"] == 1.0 and data["best_min_size"] == 50 and len(data["grid"]) == 6
    assert "best: threshold" in capsys.readouterr().out


def test_sweep_voxel_only_truth_with_voxel_size(tmp_path, capsys):
    """Truth with x, y, z only: a voxel tolerance needs nothing, an Angstrom one a voxel size."""
    from deepict_dask.evaluate.files import load_table

    prob, truth = synthetic()
    tpath = tmp_path / "truth_vox.csv"
    truth[["tomo", "class", "x", "y", "z"]].to_csv(tpath, index=False)
    maps = {"tomo1": make_volume(prob, voxel_size=10.0)}
    grid = {"thresholds": [0.2, 0.5, 0.95], "min_sizes": [1, 50, 200]}
    data = sweep(maps, load_table(tpath, voxel_size=10.0), 20.0, unit="A", **grid)
    assert (data["best_threshold"], data["best_min_size"], data["f1"]) == (0.5, 50, 1.0)
    assert data["edges"] == []
    assert sweep(maps, load_table(tpath, voxels_only=True), 2.0, **grid)["f1"] == 1.0
    # the CLI without --voxel-size: one line saying what is missing
    mpath = mrc_file(tmp_path / "tomo1.mrc", prob, 10.0)
    assert main(["evaluate", "sweep", "--pred", str(mpath), "--truth", str(tpath), "--thresholds", "0.5",
                 "--min-sizes", "50", "--tolerance", "20", "--unit", "A"]) == 2
    err = capsys.readouterr().err.strip()
    assert "only voxel coordinates" in err and len(err.splitlines()) == 1


def test_sweep_warns_when_best_sits_on_grid_edge(tmp_path, capsys):
    prob, truth = synthetic()
    vol = make_volume(prob, voxel_size=10.0, chunks=16)
    res = sweep({"tomo1": vol}, truth, 2.0, thresholds=[0.2, 0.5], min_sizes=[1, 50])
    assert len(res["edges"]) == 2
    assert "threshold 0.5 is the largest" in res["edges"][0] and "thresholds (--thresholds)" in res["edges"][0]
    assert "min_size 50 is the largest" in res["edges"][1]
    # a threshold of 1 or a minimum size of 1 cannot be widened: no warning there
    assert grid_edges({"threshold": [0.5, 1.0], "min_size": [1, 50]}, {"threshold": 1.0, "min_size": 1}) == []
    mpath = tmp_path / "tomo1.mrc"
    mrc_file(mpath, synthetic()[0], 10.0)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    assert main(["evaluate", "sweep", "--pred", str(mpath), "--truth", str(tmp_path / "truth.csv"),
                 "--tolerance", "2", "--thresholds", "0.2,0.5", "--min-sizes", "1,50"]) == 0
    assert "warning: the best threshold 0.5 is the largest value tried" in capsys.readouterr().out


def test_sweep_and_masks_read_the_prediction_of_a_store_not_its_root_tomogram(tmp_path, capsys):
    """A 'deepict predict' (or run) store holds the tomogram at its root: the map is predictions/<model>."""
    from deepict_dask.io import write_ome_zarr

    prob, truth = synthetic()
    store = tmp_path / "tomo1.ome.zarr"
    tomogram = make_volume(np.random.default_rng(0).normal(size=prob.shape).astype(np.float32), voxel_size=10.0)
    write_ome_zarr(tomogram, store, levels=1, chunks=16)
    write_ome_zarr(make_volume(prob, voxel_size=10.0), store, group="predictions/m", levels=1, chunks=16)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "sweep.json"
    assert main(["evaluate", "sweep", "--pred", str(store), "--truth", str(tmp_path / "truth.csv"), "--tolerance",
                 "2", "--thresholds", "0.5,0.6", "--min-sizes", "1,50", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["f1"] == 1.0
    mask = tmp_path / "mask.mrc"
    mrc_file(mask, (prob >= 0.5).astype(np.uint8), 10.0)
    out = tmp_path / "masks.json"
    assert main(["evaluate", "masks", "--pred", str(store), "--truth", str(mask), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["f1"] == pytest.approx(1.0)


def test_sweep_chooses_the_middle_of_a_plateau_not_its_corner():
    """Tied F1 over a plateau: the setting whose neighbours also score best, not the highest threshold."""
    from deepict_dask.evaluate.sweep import robust_best

    thresholds, sizes = [0.2, 0.4, 0.6, 0.8, 0.95], [10, 100, 1000]
    f1 = {0.2: [0.8, 1.0, 0.7], 0.4: [0.9, 1.0, 0.8], 0.6: [0.9, 1.0, 0.9], 0.8: [0.9, 1.0, 1.0],
          0.95: [0.9, 1.0, 1.0]}
    grid = [{"threshold": t, "min_size": s, "f1": f1[t][j]} for t in thresholds for j, s in enumerate(sizes)]
    best = robust_best(grid, thresholds, sizes)
    assert best["f1"] == 1.0 and (best["threshold"], best["min_size"]) == (0.8, 100)
    # a single best setting wins whatever its neighbours
    grid[0]["f1"] = 1.01
    assert robust_best(grid, thresholds, sizes) is grid[0]


def test_parse_values_lists_and_ranges():
    from deepict_dask.errors import ConfigError
    from deepict_dask.evaluate.sweep import parse_values

    assert parse_values("0.1:0.5:0.2") == [0.1, 0.3, 0.5]  # STOP included
    assert parse_values("1,10, 25,", int) == [1, 10, 25]
    assert parse_values("10:40:10", int) == [10, 20, 30, 40]
    with pytest.raises(ConfigError, match=r"cannot read '0.1:0.5:0' as a list .* step must be positive"):
        parse_values("0.1:0.5:0")
    with pytest.raises(ConfigError, match="cannot read 'a,b'"):
        parse_values("a,b")


def test_named_maps_and_open_sweep_maps(tmp_path):
    from deepict_dask.errors import InputError
    from deepict_dask.evaluate.sweep import map_name, named_maps, open_sweep_maps

    prob, truth = synthetic()
    mrc_file(tmp_path / "a.mrc", prob, 10.0)
    odd = tmp_path / "x=y.mrc"  # an existing path with '=' is a path, not TOMO=PATH
    mrc_file(odd, prob, 10.0)
    assert map_name(f"t2={tmp_path / 'a.mrc'}") == ("t2", str(tmp_path / "a.mrc"))
    assert map_name(str(odd)) == ("x=y", str(odd))
    # one map against one truth tomogram takes the truth's name; several keep theirs
    assert named_maps([str(tmp_path / "a.mrc")], truth) == {"tomo1": str(tmp_path / "a.mrc")}
    assert set(named_maps([str(tmp_path / "a.mrc"), str(odd)], truth)) == {"a", "x=y"}
    maps = open_sweep_maps([str(tmp_path / "a.mrc")], truth)
    assert list(maps) == ["tomo1"] and maps["tomo1"].shape == prob.shape
    np.testing.assert_allclose(maps["tomo1"].values, prob)
    with pytest.raises(InputError, match="no such file or directory"):
        open_sweep_maps([str(tmp_path / "missing.mrc")], truth)
