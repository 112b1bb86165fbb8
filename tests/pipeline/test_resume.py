"""Resume never trusts a damaged output: inventories, the cheap and the full check, leftovers, foreign folders."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from deepict_dask.cli.main import main
from deepict_dask.errors import OutputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.checksum import ZARR_META, check_contents, check_sizes, inventory
from deepict_dask.pipeline.config import load_config
from deepict_dask.pipeline.manifest import Manifest
from deepict_dask.pipeline.run import check_run_dir, run_workflow
from tests.pipeline.project import make_project


def chunk_files(group: Path) -> list[Path]:
    """The level-0 chunk files of an OME-Zarr image group (any Zarr format)."""
    return sorted(p for p in (group / "0").rglob("*") if p.is_file() and p.name not in ZARR_META)


def level0(group: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(group / "0"), mode="r")[...])


def small_zarr(path: Path) -> Path:
    """A group with one array and a child group (the child belongs to someone else)."""
    g = zarr.open_group(str(path), mode="w")
    a = g.create_array("0", shape=(8, 8), chunks=(4, 4), dtype="f4", fill_value=0)
    a[...] = np.arange(64, dtype="f4").reshape(8, 8) + 1
    child = g.create_group("filtered")
    child.create_array("0", shape=(4,), chunks=(2,), dtype="u1", fill_value=0)[...] = 1
    return path


# ------------------------------------------------------------------------------------------- inventory


def test_inventory_lists_the_group_arrays_and_checks_sizes_then_contents(tmp_path):
    store = small_zarr(tmp_path / "s.zarr")
    inv = inventory(store)
    names = [f[0] for f in inv["files"]]
    assert "zarr.json" in names and "0/zarr.json" in names
    assert not any(n.startswith("filtered") for n in names)  # another stage's output
    assert inv["arrays"]["0"] == {"chunks": 4, "shape": [8, 8], "dtype": "float32"}
    assert inventory(store)["digest"] == inv["digest"]
    assert check_sizes(store, inv["files"]) is None and check_contents(store, inv["files"]) is None

    chunk = store / "0" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF  # same size: only the full check sees it
    chunk.write_bytes(bytes(data))
    assert check_sizes(store, inv["files"]) is None
    assert "0/c/1/0 changed" in check_contents(store, inv["files"])
    chunk.write_bytes(bytes(data) + b"x")
    assert "0/c/1/0 has" in check_sizes(store, inv["files"])
    chunk.unlink()
    assert check_sizes(store, inv["files"]) == "file 0/c/1/0 missing"

    table = tmp_path / "t.csv"
    table.write_text("x,y\n1,2\n")
    entries = inventory(table)["files"]
    (store / "0" / "c" / "9").write_bytes(b"")  # a file nobody wrote
    assert check_contents(table, entries) is None
    assert "unexpected file 0/c/9" in check_contents(store, [e for e in inv["files"] if e[0] != "0/c/1/0"])


# ------------------------------------------------------------------------------------ end-to-end resume


def test_deleted_and_garbled_chunks_are_rebuilt_with_identical_data(tmp_path, tiny_models, client, caplog):
    config = load_config(make_project(tmp_path, tiny_models, n=2, particles=True))
    first = run_workflow(config, client=client)
    assert first.exit_code == 0, {n: o.reason for n, o in first.outcomes.items()}
    run = tmp_path / "run"
    pred0 = run / "tomograms" / "t0.ome.zarr" / "predictions" / "tiny3d"
    filt1 = run / "tomograms" / "t1.ome.zarr" / "filtered"
    before = {"pred0": level0(pred0), "filt1": level0(filt1)}
    tables = {n: (run / "tables" / n / f"{n}_particles.csv").read_text() for n in ("t0", "t1")}
    rec = Manifest(run).load("t0")
    assert rec.stages["predict:m3"].inventory[str(pred0)]["arrays"]["0"]["chunks"] == len(chunk_files(pred0))

    chunk_files(pred0)[0].unlink()  # reads back as zeros if trusted
    garbled = chunk_files(filt1)[-1]
    garbled.write_bytes(garbled.read_bytes()[:-7] + b"garbage-bytes")  # decodes differently if trusted
    with caplog.at_level(logging.WARNING, logger="deepict_dask"):
        again = run_workflow(config, client=client)
    assert again.exit_code == 0
    assert sorted(again.outcomes["t0"].ran) == ["pick:membrane", "pick:ribosome", "predict:m3", "tables"]
    assert sorted(again.outcomes["t1"].ran) == sorted(
        ["preprocess", "predict:m2", "predict:m3", "pick:cytosol", "pick:membrane", "pick:ribosome", "tables"])
    assert len(again.repaired) == 2
    assert "t0: predict:m3 is recomputed" in again.repaired[0] and "missing" in again.repaired[0]
    assert "t1: preprocess is recomputed" in again.repaired[1] and "bytes" in again.repaired[1]
    assert "t1: preprocess is recomputed" in caplog.text
    np.testing.assert_array_equal(level0(pred0), before["pred0"])
    np.testing.assert_array_equal(level0(filt1), before["filt1"])
    assert {n: (run / "tables" / n / f"{n}_particles.csv").read_text() for n in ("t0", "t1")} == tables

    third = run_workflow(config, client=client)  # repaired outputs are trusted again
    assert all(o.ran == [] for o in third.outcomes.values()) and third.repaired == []


def test_verify_finds_a_same_size_garble_that_the_cheap_check_cannot(tmp_path, tiny_models, client, capsys):
    cfg = make_project(tmp_path, tiny_models, n=1)
    args = ["run", str(cfg), "--scheduler", client.scheduler.address, "--no-progress"]
    assert main(args) == 0
    pred = tmp_path / "run" / "tomograms" / "t0.ome.zarr" / "predictions" / "tiny2d"
    good = level0(pred)
    chunk = chunk_files(pred)[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x55
    chunk.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(args) == 0
    assert "0 computed, 1 already up to date" in capsys.readouterr().out
    assert main(args + ["--verify", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "predict:m2 (damaged output)" in out
    assert main(args + ["--verify"]) == 0
    assert "1 computed" in capsys.readouterr().out
    np.testing.assert_array_equal(level0(pred), good)


# ------------------------------------------------------------------------------ leftovers, foreign dirs


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "t.ome.zarr"
    code = ("import os, signal, sys\nfrom deepict_dask.io.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.mkdir(); (tmp / 'chunk').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".t.ome.zarr.tmp-")
    with atomic_path(tmp_path / "other") as tmp:  # another target's write leaves it alone
        tmp.write_text("x")
    assert (tmp_path / left[0]).exists()
    with atomic_path(target) as tmp:
        assert (tmp_path / left[0]).exists() is False  # gone before the new write starts
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "t.ome.zarr"]


def test_manifest_saves_do_not_scan_the_manifest_directory(tmp_path, monkeypatch):
    """One scan per save of a directory with an entry per tomogram made a large run's saves O(N) each."""
    import deepict_dask.io.atomic as atomic

    scanned = []
    monkeypatch.setattr(atomic, "remove_dead_temporaries", lambda target: scanned.append(Path(target).name))
    manifest = Manifest(tmp_path / "run")
    manifest.save(manifest.load("t0"))
    assert (tmp_path / "run" / "manifest" / "t0.json").is_file() and scanned == []
    with atomic_path(tmp_path / "other.csv") as tmp:  # other writers still clean up after killed ones
        tmp.write_text("x")
    assert scanned == ["other.csv"]


def test_failed_prediction_write_leaves_no_store_skeleton(tmp_path):
    import dask.array as da

    from deepict_dask.inference.predict import Prediction, PredictOptions, write_prediction
    from deepict_dask.io import make_volume
    from deepict_dask.models import ModelInfo

    def disk_full(block):
        raise OSError(28, "No space left on device")

    data = da.zeros((1, 8, 8, 8), chunks=4, dtype=np.uint8).map_blocks(disk_full, dtype=np.uint8)
    probs = make_volume(data, (10.0, 10.0, 10.0))
    info = ModelInfo(name="m", dim=3, classes=["a"], architecture={"preset": "deepict_ribosome"},
                     patch_size=[16] * 3, voxel_size=10.0)
    pred = Prediction(probs, None, info, params={"dtype": "uint8", "scale": 1 / 255, "model_sha256": "0"})
    store = tmp_path / "tomo.ome.zarr"
    with pytest.raises(OutputError, match="No space left"):
        write_prediction(pred, store, PredictOptions(), overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_folder_that_is_not_a_run_is_refused_unless_overwrite(tmp_path, tiny_models, capsys):
    cfg = make_project(tmp_path, tiny_models, n=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "particles.csv").write_text("my own picks\n")
    assert main(["run", str(cfg), "--out", str(mine), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mine) in err[0] and "not a deepict run directory" in err[0]
    assert (mine / "particles.csv").read_text() == "my own picks\n"
    assert main(["run", str(cfg), "--out", str(mine), "--dry-run", "--overwrite"]) == 0
    check_run_dir(tmp_path / "new")  # missing, empty or an earlier run's folder: fine
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty")
    (mine / "manifest").mkdir()
    check_run_dir(mine)
    with pytest.raises(OutputError, match="--overwrite"):
        check_run_dir(tmp_path / "tomos")
