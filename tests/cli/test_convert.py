"""``deepict convert``: MRC -> OME-Zarr (and back), per-file errors, nothing half-written."""

from __future__ import annotations

import json
import os

import mrcfile
import numpy as np
import pytest
import zarr

import deepict_dask.cli.convert as convert_cli
from deepict_dask.cli.main import main
from deepict_dask.io import open_volume
from tests.helpers import mrc_file

# anisotropic voxels (x, y, z) and a label the converted store must keep
SOURCE = {"voxel": (2.0, 2.0, 3.0), "label": "tilt series 7, SIRT"}


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(3).normal(size=(24, 30, 36)).astype(np.float32)


def test_convert_on_a_two_process_cluster(tmp_path, data):
    """A real LocalCluster with 2 worker processes: the MRC reader must pickle to the workers."""
    src = mrc_file(tmp_path / "tomo_01.mrc", data, **SOURCE)
    rc = main(["convert", str(src), "--out", str(tmp_path / "out"), "--chunks", "16",
               "--workers", "2", "--threads-per-worker", "1", "--no-progress"])
    assert rc == 0
    out = tmp_path / "out" / "tomo_01.ome.zarr"
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(root["0"][:], data)
    assert [root[k].shape for k in "012"] == [(24, 30, 36), (12, 15, 18), (6, 8, 9)]
    attrs = json.loads((out / ".zattrs").read_text())
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [3.0, 2.0, 2.0]
    assert attrs["deepict"]["source_file"] == "tomo_01.mrc"
    assert attrs["deepict"]["mrc_header"]["labels"][1] == "tilt series 7, SIRT"
    assert attrs["deepict"]["mrc_header"]["mode"] == 2


def test_convert_options_and_back_to_mrc(tmp_path, data, no_cluster, capsys):
    src = mrc_file(tmp_path / "a.rec", data, **SOURCE)
    rc = main(["convert", str(src), "--out", str(tmp_path / "o"), "--chunks", "8,16,16",
               "--levels", "2", "--compressor", "lz4", "--ngff", "0.5"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "o" / "a.ome.zarr"
    root = zarr.open_group(str(out), mode="r")
    assert root.metadata.zarr_format == 3 and list(sorted(root.array_keys())) == ["0", "1"]
    assert root["0"].chunks == (8, 16, 16)
    # OME-Zarr back to MRC
    rc = main(["convert", str(out), "--out", str(tmp_path / "m"), "--format", "mrc"])
    assert rc == 0
    with mrcfile.open(tmp_path / "m" / "a.mrc") as m:
        np.testing.assert_array_equal(m.data, data)
        assert float(m.voxel_size.z) == 3.0
    # existing output: refused without --overwrite, replaced with it
    assert main(["convert", str(src), "--out", str(tmp_path / "o")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(src), "--out", str(tmp_path / "o"), "--overwrite", "--levels", "1"]) == 0
    assert sorted(zarr.open_group(str(out), mode="r").array_keys()) == ["0"]


def test_bad_inputs_fail_one_by_one(tmp_path, data, no_cluster, capsys):
    good = mrc_file(tmp_path / "good.mrc", data, **SOURCE)
    trunc = mrc_file(tmp_path / "trunc.mrc", data, **SOURCE)
    trunc.write_bytes(trunc.read_bytes()[:5000])
    text = tmp_path / "readme.mrc"
    text.write_text("hello\n" * 300)
    flat = mrc_file(tmp_path / "flat.mrc", data[0], **SOURCE)
    out = tmp_path / "out"
    rc = main(["convert", str(tmp_path / "missing.mrc"), str(trunc), str(text), str(flat), str(good),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing.mrc: no such file" in err
    assert "trunc.mrc: truncated MRC file" in err and "5000 bytes" in err
    assert "readme.mrc: not an MRC file" in err
    assert "flat.mrc: is a 2D image" in err
    assert "4 of 5 input(s) failed" in err
    assert "Traceback" not in err
    assert sorted(os.listdir(out)) == ["good.ome.zarr"]  # the good one is still converted
    np.testing.assert_array_equal(open_volume(out / "good.ome.zarr").values, data)


def test_only_bad_inputs_start_no_cluster_and_write_nothing(tmp_path, monkeypatch, capsys):
    def fail(_spec):
        raise AssertionError("no cluster should start when every input is bad")

    monkeypatch.setattr(convert_cli, "dask_client", fail)
    (tmp_path / "x.tif").write_bytes(b"II*\x00")
    assert main(["convert", str(tmp_path / "x.tif"), "--out", str(tmp_path / "o")]) == 2
    assert "unsupported file type '.tif'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_nan_voxels_warned_with_count(tmp_path, data, no_cluster, capsys):
    d = data.copy()
    d[0, 0, :5] = np.nan
    d[3, 3, 3] = np.inf
    src = mrc_file(tmp_path / "nan.mrc", d, **SOURCE)
    assert main(["convert", str(src), "--out", str(tmp_path / "o")]) == 0
    assert "6 NaN/inf voxels" in capsys.readouterr().err


def test_failure_midway_leaves_no_output(tmp_path, data, no_cluster, monkeypatch, capsys):
    """A write that dies while building level 1 leaves neither the store nor a temporary."""
    import deepict_dask.io.zarr_store as zs

    def broken(source, chunks, **kw):
        def die(block):
            raise OSError(5, "Input/output error")

        return zs.da.zeros(zs.level_shape(source.shape), chunks=chunks, dtype=source.dtype).map_blocks(die, dtype=source.dtype)

    monkeypatch.setattr(zs, "downsample", broken)
    src = mrc_file(tmp_path / "t.mrc", data, **SOURCE)
    assert main(["convert", str(src), "--out", str(tmp_path / "o"), "--chunks", "16"]) == 2
    err = capsys.readouterr().err
    assert "writing level 1 failed" in err and "Input/output error" in err
    assert os.listdir(tmp_path / "o") == []


def test_duplicate_output_names_and_bad_options(tmp_path, data, no_cluster, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x1, x2 = mrc_file(tmp_path / "a" / "x.mrc", data, **SOURCE), mrc_file(tmp_path / "b" / "x.mrc", data, **SOURCE)
    assert main(["convert", str(x1), str(x2), "--out", str(tmp_path / "o")]) == 2
    assert "same output name: x" in capsys.readouterr().err
    assert main(["convert", str(x1), "--out", str(tmp_path / "o"), "--chunks", "8,8"]) == 2
    assert "--chunks" in capsys.readouterr().err
