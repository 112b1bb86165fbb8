"""``deepict predict`` end to end: MRC in, OME-Zarr probability maps out, overwrite rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deepict_dask.cluster as cluster
from deepict_dask.cli.main import main
from deepict_dask.inference.predict import PredictOptions, make_ref, predict_file
from deepict_dask.io import open_volume
from deepict_dask.models import ModelInfo, build_network, save_model
from tests.helpers import mrc_file


def _model(path, name="ribo", seed=0, dim=3, classes=("ribosome",)):
    torch.manual_seed(seed)
    arch = {"preset": "deepict_ribosome"} if dim == 3 else {"kind": "UNet2D", "depth": 2, "initial_filters": 4}
    info = ModelInfo(name=name, dim=dim, classes=list(classes), architecture=arch, patch_size=[32] * dim,
                     voxel_size=10.0)
    return save_model(path, build_network(info), info)


@pytest.fixture
def tomo(tmp_path):
    path = tmp_path / "tomo1.mrc"
    data = np.random.default_rng(0).normal(size=(20, 40, 36)).astype(np.float32)
    mrc_file(path, data, 10.0)
    return path


@pytest.fixture
def inprocess_cluster(monkeypatch):
    """A threads-only LocalCluster: same code path as the CLI, without worker start-up cost."""
    from distributed import LocalCluster

    monkeypatch.setattr(cluster, "make_cluster", lambda spec: LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0"))


def test_predict_cli_writes_probabilities_and_refuses_other_models(tmp_path, tomo, inprocess_cluster, capsys):
    model = _model(tmp_path / "ribo.safetensors")
    out = tmp_path / "out"
    args = ["predict", str(tomo), "--model", str(model), "--out", str(out), "--patch", "32", "--overlap", "4", "--chunk", "64"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("Dask dashboard:") == 1 and "dashboard" not in captured.out.lower()
    assert "--chunk is deprecated, use --chunks" in captured.err
    assert f"{tomo} -> " in captured.out
    p = open_volume(out / "tomo1.ome.zarr", group="predictions/ribo")
    assert p.dims == ("c", "z", "y", "x") and p.shape == (1, 20, 40, 36) and p.dtype == np.uint8
    assert list(p["c"].values) == ["ribosome"] and p.attrs["voxel_size"] == (10.0, 10.0, 10.0)
    meta = p.attrs["prediction"]
    assert len(meta["model_sha256"]) == 64 and meta["window"] == 32 and meta["finished"]
    # identical numbers from the Python API on a different chunking
    direct = predict_file(tomo, make_ref(model, PredictOptions(window=32, margin=4, chunk=16, dtype="float32")), tmp_path / "o2",
                          PredictOptions(window=32, margin=4, chunk=16, dtype="float32"), chunks=8)
    ref = open_volume(direct).data.compute()
    assert np.abs(p.data.compute().astype(float) - np.rint(ref * 255)).max() <= 1
    # a different model of the same name is refused, nothing is touched
    other = _model(tmp_path / "other.safetensors", seed=1)
    assert main(["predict", str(tomo), "--model", str(other), "--out", str(out), "--patch", "32", "--overlap", "4"]) == 2
    captured = capsys.readouterr()
    assert "deepict predict: error:" in captured.err and "another model" in captured.err
    assert (open_volume(out / "tomo1.ome.zarr", group="predictions/ribo").data.compute() == p.data.compute()).all()
    assert main(["predict", str(tomo), "--model", str(other), "--out", str(out), "--patch", "32", "--overlap", "4", "--overwrite"]) == 0


def test_predict_cli_2d_model_writes_mask_and_tta_variance(tmp_path, tomo, inprocess_cluster):
    model = _model(tmp_path / "m2d.safetensors", name="memb", dim=2, classes=("membrane", "cytosol"))
    out = tmp_path / "out"
    args = ["predict", str(tomo), "--model", str(model), "--out", str(out), "--patch", "32", "--overlap", "8",
            "--sigma-z", "2", "--tta", "rotations"]
    assert main(args) == 0
    probs = open_volume(out / "tomo1.ome.zarr", group="predictions/memb").data.compute() / 255.0
    mask = open_volume(out / "tomo1.ome.zarr", group="labels/memb").data.compute()
    var = open_volume(out / "tomo1.ome.zarr", group="predictions/memb_variance")
    assert probs.shape == (2, 20, 40, 36) and var.shape == probs.shape and mask.shape == (20, 40, 36)
    expect = np.where((probs >= 0.75).any(0), probs.argmax(0) + 1, 0)
    assert (mask == expect).all()
    assert float(var.data.max().compute()) <= 0.25


def test_predict_cli_bad_inputs(tmp_path, tomo, capsys):
    model = _model(tmp_path / "ribo.safetensors")
    assert main(["predict", str(tmp_path / "nope.mrc"), "--model", str(model), "--out", str(tmp_path)]) == 2
    assert main(["predict", str(tomo), "--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.mrc" in err and "missing.safetensors" in err


def test_predict_cli_bad_model_is_one_error_before_any_cluster(tmp_path, tomo, capsys, monkeypatch):
    """A model whose weights do not fit its architecture stops predict at once, on stderr, no traceback."""
    from safetensors.torch import save_file

    from deepict_dask.models.files import META_KEY

    info = ModelInfo(name="bad", dim=3, classes=["ribosome"], architecture={"preset": "deepict_ribosome"},
                     patch_size=[32] * 3, voxel_size=10.0)
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad), metadata={META_KEY: info.model_dump_json()})
    monkeypatch.setattr(cluster, "make_cluster", lambda spec: pytest.fail("cluster started for a bad model"))
    assert main(["predict", str(tomo), "--model", str(bad), "-o", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepict predict: error: ") and "bad.safetensors" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_predict_cli_real_worker_processes(tmp_path, tomo):
    """Model loaded inside worker processes from its path (nothing pickled but the reference)."""
    model = _model(tmp_path / "ribo.safetensors")
    out = tmp_path / "out"
    assert main(["predict", str(tomo), "--model", str(model), "--out", str(out), "--patch", "32",
                 "--overlap", "4", "--workers", "1", "--dtype", "float16"]) == 0
    p = open_volume(out / "tomo1.ome.zarr", group="predictions/ribo")
    assert p.dtype == np.float16 and 0 <= float(p.min()) and float(p.max()) <= 1


def test_gpu_predictions_run_on_gpu_workers_and_are_written_by_the_predicting_task(tmp_path, tomo):
    """The GPU resource reaches the scheduler whatever its fusion, and each block is stored by the task
    that predicts it (no separate write task waiting behind the next prediction)."""
    from dataclasses import replace

    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    from deepict_dask.inference.predict import predict_volume, write_prediction

    model = _model(tmp_path / "ribo.safetensors")
    opts = PredictOptions(window=16, margin=4, chunk=16, levels=1)
    ref = make_ref(model, opts)
    workers = {"cpu": {"cls": Worker, "options": {"nthreads": 1}},
               "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}}}
    with SpecCluster(workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}) as sc, \
            Client(sc) as client:
        gpu_worker = sc.workers["gpu"]
        if True:
            pred = predict_volume(open_volume(tomo, chunks=16), ref, opts, as_stored=True)
            n_blocks = pred.probabilities.data.npartitions
            assert n_blocks >= 6
            for gpu, where in ((True, {gpu_worker.address}), (False, set(client.scheduler_info()["workers"]))):
                with get_task_stream(client) as stream:
                    write_prediction(replace(pred, gpu=gpu), tmp_path / f"o{gpu}.ome.zarr", opts)
                blocks = [t for t in stream.data if "finalize" not in str(t["key"])]
                assert len(blocks) == n_blocks  # one task per block: predicted and stored together
                used = {t["worker"] for t in blocks}
                assert used <= where and (not gpu or used == where)
            assert len(used) == 2  # without the resource both workers take blocks
            got = open_volume(tmp_path / "oTrue.ome.zarr", group="predictions/ribo").data.compute()
            want = open_volume(tmp_path / "oFalse.ome.zarr", group="predictions/ribo").data.compute()
            np.testing.assert_array_equal(got, want)


def test_failed_predict_file_leaves_no_store_with_only_the_tomogram(tmp_path, tomo, monkeypatch):
    """The tomogram goes to the store root first; a later failure must not leave that half-store."""
    import deepict_dask.inference.predict as predict

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict, "write_prediction", disk_full)
    model = _model(tmp_path / "ribo.safetensors")
    opts = PredictOptions(window=32, margin=4, chunk=16, dtype="float32")
    with pytest.raises(OSError, match="No space left"):
        predict_file(tomo, make_ref(model, opts), tmp_path / "out", opts)
    assert not (tmp_path / "out" / "tomo1.ome.zarr").exists()
