"""deepict pick end to end: files in, tables and label images out, clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import InputError
from deepict_dask.io import open_volume, write_ome_zarr
from deepict_dask.io.coords import read_table
from deepict_dask.io.volume import make_volume
from deepict_dask.pick.api import pick
from tests.helpers import mrc_file

DASK = ["--workers", "1", "--threads-per-worker", "2", "--no-progress"]


@pytest.fixture(autouse=True)
def _threaded_local_cluster(monkeypatch):
    """Start the CLI's LocalCluster with threads instead of processes: same code path, faster tests."""
    import dataclasses

    import deepict_dask.cluster as cluster

    real = cluster.make_cluster
    monkeypatch.setattr(cluster, "make_cluster", lambda spec: real(dataclasses.replace(spec, processes=False, dashboard_address="127.0.0.1:0")))


def _map() -> np.ndarray:
    vol = np.zeros((24, 24, 32), np.float32)
    vol[3:7, 3:7, 3:7] = 0.9  # 64 voxels
    vol[10:13, 10:13, 10:13] = 0.8  # 27 voxels
    vol[18:20, 18:20, 25:27] = 0.7  # 8 voxels
    return vol


def test_cli_mrc_to_star_csv_and_labels(tmp_path, capsys):
    src = mrc_file(tmp_path / "tomo1.mrc", _map())
    out = tmp_path / "picks.star"
    code = main(["pick", str(src), "--out", str(out), "--threshold", "0.5", "--min-size", "27", "--max-size", "64",
                 "--labels-out", str(tmp_path / "labels.ome.zarr"), "--summary", str(tmp_path / "s.json"), *DASK])
    assert code == 0
    t = read_table(out)
    assert len(t) == 2 and sorted(t["size"]) == [27, 64]
    assert set(t["tomo"]) == {"tomo1"}
    np.testing.assert_allclose(sorted(t["x"]), [4.5, 11.0])
    lab = open_volume(tmp_path / "labels.ome.zarr", group="labels/particle").data.compute()
    assert sorted(np.unique(lab).tolist()) == [0, 1, 2] and (lab > 0).sum() == 91
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["particle"]["picked"] == 2 and summary["particle"]["clusters_before_filters"] == 3
    captured = capsys.readouterr()
    assert "2 picks written" in captured.out
    assert captured.err.count("Dask dashboard:") == 1 and "dashboard" not in captured.out.lower()


def test_cli_refuses_existing_outputs_without_overwrite(tmp_path, capsys):
    src = mrc_file(tmp_path / "tomo1.mrc", _map())
    out = tmp_path / "picks.csv"
    out.write_text("keep me\n")
    assert main(["pick", str(src), "-o", str(out), *DASK]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"deepict pick: error: {out}: already exists (use --overwrite to replace it)"
    assert out.read_text() == "keep me\n"
    summary = tmp_path / "s.json"
    summary.write_text("{}")
    assert main(["pick", str(src), "-o", str(tmp_path / "new.csv"), "--summary", str(summary), *DASK]) == 2
    assert "s.json: already exists" in capsys.readouterr().err and not (tmp_path / "new.csv").exists()
    assert main(["pick", str(src), "-o", str(out), "--summary", str(summary), "--overwrite", *DASK]) == 0
    assert len(read_table(out)) == 3 and json.loads(summary.read_text())["particle"]["picked"] == 3


def test_cli_prediction_group_class_choice_and_copick(tmp_path):
    vol = _map()
    other = np.zeros_like(vol)
    other[1:3, 20:23, 1:3] = 1.0
    probs = make_volume(np.round(np.stack([vol, other]) * 255).astype(np.uint8), 10.0,
                        channels=["ribosome", "membrane"])
    store = tmp_path / "tomo2.ome.zarr"
    write_ome_zarr(probs, store, group="predictions/unet", levels=1, chunks=16,
                   attrs={"prediction": {"scale": 1 / 255, "activation": "sigmoid"}})
    out = tmp_path / "ribo.json"
    assert main(["pick", str(store), "--class", "ribosome", "--out", str(out), *DASK]) == 0
    t = read_table(out)
    assert len(t) == 3 and set(t["class"]) == {"ribosome"}
    assert main(["pick", str(store), "--class", "nucleus", "--out", str(tmp_path / "x.csv"), *DASK]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_cli_nothing_survives_writes_header_and_exits_0(tmp_path, capsys):
    src = mrc_file(tmp_path / "t.mrc", _map())
    out = tmp_path / "none.csv"
    assert main(["pick", str(src), "--out", str(out), "--min-size", "1000", *DASK]) == 0
    df = pd.read_csv(out)
    assert df.empty and {"x", "y", "z", "x_A", "score", "size"} <= set(df.columns)
    assert "no cluster survived" in capsys.readouterr().out


def test_cli_bad_map_values_leave_nothing(tmp_path, capsys):
    bad = _map() * 3.0
    src = mrc_file(tmp_path / "bad.mrc", bad)
    out = tmp_path / "bad.csv"
    assert main(["pick", str(src), "--out", str(out), "--labels-out", str(tmp_path / "l.ome.zarr"), *DASK]) == 2
    assert "must lie in [0, 1]" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "l.ome.zarr").exists()


def test_bad_inputs_raise_clear_errors():
    from deepict_dask.errors import ConfigError
    from deepict_dask.options import build
    from deepict_dask.pick.options import PickOptions

    with pytest.raises(InputError, match="NaN"):
        vol = _map()
        vol[0, 0, 0] = np.nan
        pick(make_volume(vol, 10.0))
    with pytest.raises(ConfigError, match="^threshold: "):
        build(PickOptions, {"threshold": 1.5})
    with pytest.raises(ConfigError, match="^connectivity: "):
        build(PickOptions, {"connectivity": 8})
    with pytest.raises(ConfigError, match="^method: unknown method 'kmeans'; choose one of cc, meanshift"):
        build(PickOptions, {"method": "kmeans"})
    with pytest.raises(ConfigError, match="min_size .10. is larger than max_size .5."):
        build(PickOptions, {"min_size": 10, "max_size": 5})
    with pytest.raises(ConfigError, match="^method.bandwidth: required key missing"):
        build(PickOptions, {"method": "meanshift"})


def test_cluster_option_routes_method_and_dask_kind():
    from deepict_dask.cli.main import build_parser

    args = build_parser().parse_args(["pick", "m.mrc", "--out", "o.csv", "--method", "meanshift", "--bandwidth", "60A"])
    assert args.method == "meanshift" and args.cluster is None
    # the old spelling still chooses the method, with a warning
    args = build_parser().parse_args(["pick", "m.mrc", "--out", "o.csv", "--cluster", "meanshift", "--bandwidth", "60A"])
    assert args.method == "meanshift" and args.cluster is None
    args = build_parser().parse_args(["pick", "m.mrc", "--out", "o.csv", "--cluster", "slurm"])
    assert args.method is None and args.cluster == "slurm"  # None: the tuned method, else cc
