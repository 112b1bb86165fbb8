"""Blockwise inference engine: chunking-independent results, blending, devices, caching, inputs."""

from __future__ import annotations

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.inference import worker_cache
from deepict_dask.inference.blend import BlockAccumulator
from deepict_dask.inference.blockwise import (
    Predictor,
    blockwise_predict,
    fold_batchnorm,
    predict_whole,
    quantize,
)
from deepict_dask.inference.devices import BatchRunner, choose_device
from deepict_dask.inference.predict import PredictOptions, predict_volume
from deepict_dask.inference.predict2d import grids_2d, predict2d
from deepict_dask.inference.predict3d import grids_3d, predict3d
from deepict_dask.inference.tta import tta_flips
from deepict_dask.inference.worker_cache import PredictorRef
from deepict_dask.io.volume import make_volume
from deepict_dask.models import UNet3D
from deepict_dask.models.spec import ModelInfo


def tiny_net(dim: int = 3, out: int = 2, seed: int = 0) -> torch.nn.Module:
    """A throwaway padded conv net with batch norm (not a U-Net): enough to test the engine."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if dim == 3 else torch.nn.Conv2d
    bn = torch.nn.BatchNorm3d if dim == 3 else torch.nn.BatchNorm2d
    net = torch.nn.Sequential(conv(1, 4, 3, padding=1), bn(4), torch.nn.ReLU(), conv(4, out, 3, padding=1))
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def tiny_info(dim: int = 3, classes=("a", "b"), voxel_size: float = 10.0, **kw) -> ModelInfo:
    return ModelInfo(name="tiny", dim=dim, classes=list(classes), architecture={"kind": "test"},
                     patch_size=[16] * dim, voxel_size=voxel_size, **kw)


def load_tiny3d(path: str, device: str):
    return tiny_net(3), tiny_info(3)


def load_tiny2d(path: str, device: str):
    return tiny_net(2, out=1), tiny_info(2, classes=("membrane",))


@pytest.fixture
def vol():
    return np.random.default_rng(0).normal(size=(21, 26, 19)).astype(np.float32)


@pytest.mark.parametrize("blend", ["crop", "gaussian"])
def test_blockwise_equals_whole_volume_for_every_chunking(blend):
    vol = np.random.default_rng(3).normal(size=(13, 17, 11)).astype(np.float32)
    pred = Predictor(tiny_net(), tiny_info(), batch_size=8)
    grids = grids_3d(vol.shape, 8, 2, blend)
    ref = predict_whole(vol, grids, pred)
    assert ref.shape == (2,) + vol.shape
    for chunks in [(3, 3, 3), (13, 17, 11)]:  # smaller than a window, and one block
        x = da.from_array(vol, chunks=chunks)
        out_chunks = da.from_array(vol, chunks=(6, 9, 5)).chunks  # output blocks unlike input chunks
        got = blockwise_predict(x, grids, out_chunks, lambda: pred, 2).compute(scheduler="sync")
        np.testing.assert_allclose(got, ref, atol=1e-5)
    q = blockwise_predict(x, grids, ((2, 5, 6), (17,), (4, 7)), lambda: pred, 2, out_dtype="uint8")
    assert np.abs(q.compute(scheduler="sync").astype(int) - quantize(ref, "uint8").astype(int)).max() <= 1


def test_normalizing_in_the_tasks_equals_a_normalized_input():
    from deepict_dask.preprocess.normalize import zscore

    raw = (np.random.default_rng(4).normal(size=(13, 17, 11)) * 40 + 300).astype(np.int16)  # MRC-like ints
    pred = Predictor(tiny_net(), tiny_info(), batch_size=8)
    grids = grids_3d(raw.shape, 8, 2, "crop")
    x = da.from_array(raw, chunks=(5, 6, 4))
    mean, std = float(raw.mean()), float(raw.std())
    fused = blockwise_predict(x, grids, x.chunks, lambda: pred, 2, normalize=(mean, std)).compute(scheduler="sync")
    plain = blockwise_predict(zscore(x, mean, std), grids, x.chunks, lambda: pred, 2).compute(scheduler="sync")
    np.testing.assert_array_equal(fused, plain)
    assert np.abs(fused - blockwise_predict(x, grids, x.chunks, lambda: pred, 2).compute(scheduler="sync")).max() > 0.01


def test_stored_inputs_are_read_range_by_range_with_the_same_result(tmp_path):
    """MRC / Zarr inputs as opened: each task reads its own input range, no chunk tasks are held."""
    import zarr

    from deepict_dask.io import open_volume
    from deepict_dask.io.mrc import write_mrc
    from deepict_dask.io.volume import stored_source

    raw = (np.random.default_rng(5).normal(size=(13, 17, 11)) * 40 + 300).astype(np.int16)
    pred = Predictor(tiny_net(), tiny_info(), batch_size=8)
    grids = grids_3d(raw.shape, 8, 2, "crop")
    mean, std = float(raw.mean()), float(raw.std())
    want = predict_whole((raw - np.float32(mean)) * np.float32(1 / std), grids, pred)
    write_mrc(make_volume(raw, 10.0), tmp_path / "t.mrc")
    z = zarr.open_array(str(tmp_path / "t.zarr"), mode="w", shape=raw.shape, chunks=(4, 5, 6), dtype=raw.dtype)
    z[:] = raw
    for x in (open_volume(tmp_path / "t.mrc", chunks=(4, 6, 5)).data, da.from_zarr(z)):
        assert stored_source(x) is not None and stored_source(x + 1) is None
        out = blockwise_predict(x, grids, ((6, 7), (9, 8), (11,)), lambda: pred, 2, normalize=(mean, std))
        graph = dict(out.__dask_graph__())
        assert not any(isinstance(k, tuple) and k[0] == x.name for k in graph)  # no chunk tasks
        np.testing.assert_allclose(out.compute(scheduler="sync"), want, atol=1e-5)
        raw_again = x.compute(scheduler="sync")
        np.testing.assert_array_equal(raw_again, raw)  # the source was not normalized in place


def test_crop_keeps_each_window_core(vol):
    """With crop blending a voxel's value is exactly the prediction of the one window owning it."""
    pred = Predictor(tiny_net(), tiny_info(), batch_size=2)
    grids = grids_3d(vol.shape, 16, 3, "crop")
    ref = predict_whole(vol, grids, pred)
    # window starting at (10, 10, 10) - 3 owns the core [10, 20)^3 and reads input [7, 23)
    padded = np.pad(vol, ((0, 3), (0, 3), (0, 3)), mode="reflect")
    window, _ = pred.forward(padded[None, 7:23, 7:23, 7:23])
    np.testing.assert_allclose(ref[:, 10:20, 10:20, 10:19], window[0][:, 3:13, 3:13, 3:12], atol=1e-6)


def test_tomogram_smaller_than_window_is_padded():
    small = np.random.default_rng(1).normal(size=(3, 9, 5)).astype(np.float32)
    x = da.from_array(small, chunks=4)
    out = predict3d(x, PredictorRef("tiny", loader=load_tiny3d), 2, window=16, margin=3)
    assert out.compute(scheduler="sync").shape == (2, 3, 9, 5)


def test_2d_path_equals_whole_volume_then_z_gaussian():
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(14, 30, 27)).astype(np.float32)
    pred = Predictor(tiny_net(2, out=1), tiny_info(2, classes=("m",)), batch_size=16)
    grids = grids_2d(vol.shape, 16, 4)
    ref = gaussian_filter1d(predict_whole(vol, grids, pred), 1.5, axis=1, mode="reflect", truncate=4.0)
    for z_chunk, yx in [(3, 11), (14, 64)]:
        x = da.from_array(vol, chunks=(5, 13, 40))
        got = predict2d(x, lambda: pred, 1, tile=16, margin=4, sigma_z=1.5, z_chunk=z_chunk, yx_chunk=yx)
        np.testing.assert_allclose(got.compute(scheduler="sync"), ref, atol=1e-5)


def test_2d_tiles_average_overlapping_cores():
    g = grids_2d((1, 100, 100), 48, 12)[1]
    starts = np.asarray(g.starts) + 12
    assert starts[0] == 0 and starts[-1] + 24 == 100  # evenly spaced cores cover the slice exactly
    assert len(set(np.diff(starts))) <= 2


def test_tta_uses_wedge_preserving_rotations_and_reports_variance(vol):
    flips = tta_flips(3, "rotations")
    assert len(flips) == 4 and all(len(f) % 2 == 0 for f in flips)  # proper rotations only
    assert len(tta_flips(3, "mirrors")) == 8 and tta_flips(2, "rotations") == [(), (0, 1)]
    pointwise = torch.nn.Conv3d(1, 1, 1)  # flip-equivariant: TTA changes nothing
    info = tiny_info(classes=("a",))
    plain, var = Predictor(pointwise, info).forward(vol[None, :16, :16, :16])
    mean, var = Predictor(pointwise, info, tta="rotations").forward(vol[None, :16, :16, :16])
    np.testing.assert_allclose(mean, plain, atol=1e-6)
    assert var.shape == mean.shape and var.max() < 1e-10
    _, var2 = Predictor(tiny_net(out=1), info, tta="rotations").forward(vol[None, :16, :16, :16])
    assert var2.max() > 1e-6


def test_batch_runner_halves_on_out_of_memory():
    seen = []

    def fake(batch):
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return [b * 2 for b in batch]

    runner = BatchRunner(16, on_oom=lambda: None)
    assert runner.run(fake, list(range(10))) == [2 * i for i in range(10)]
    assert runner.batch_size == 2 and seen[:3] == [10, 8, 4]
    with pytest.raises(ValueError):
        BatchRunner(4, on_oom=lambda: None).run(lambda b: (_ for _ in ()).throw(ValueError("other")), [1])
    with pytest.raises(RuntimeError):
        BatchRunner(1, on_oom=lambda: None).run(lambda b: (_ for _ in ()).throw(RuntimeError("out of memory")), [1])


def test_block_too_large_for_the_gpu_is_blended_on_the_host(vol, monkeypatch):
    """Through the CPU fallback: the device's accumulator raises CUDA's out-of-memory error once;
    the block is then blended on the host, windows still going through the predictor, same values."""
    from deepict_dask.inference import blockwise as engine

    pred = Predictor(tiny_net(), tiny_info(), batch_size=4)
    grids = grids_3d(vol.shape, 16, 3, "gaussian")
    want = predict_whole(vol, grids, pred)
    made = []

    class TightDevice(engine.BlockAccumulator):
        def __init__(self, *args):
            made.append(args[-1])
            if len(made) == 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB")
            super().__init__(*args)

    monkeypatch.setattr(engine, "BlockAccumulator", TightDevice)
    monkeypatch.setattr(engine, "is_cuda", lambda device: True)  # pretend the predictor sits on a GPU
    np.testing.assert_array_equal(predict_whole(vol, grids, pred), want)
    assert made == ["cpu", "cpu"]  # first try on the predictor's device, then the host
    np.testing.assert_array_equal(predict_whole(vol, grids, pred), want)
    assert made == ["cpu", "cpu", "cpu"] and pred.blend_on_host  # later blocks: straight to the host
    monkeypatch.setattr(engine, "is_cuda", lambda device: False)  # on the CPU an OOM is not retried
    made.clear()
    pred.blend_on_host = False
    with pytest.raises(torch.cuda.OutOfMemoryError):
        predict_whole(vol, grids, pred)

    def no_window_fits(patches):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(engine, "is_cuda", lambda device: True)
    monkeypatch.setattr(engine, "BlockAccumulator", BlockAccumulator)
    monkeypatch.setattr(pred, "forward_tensor", no_window_fits)
    pred.runner((16, 16, 16))._on_oom = lambda: None
    with pytest.raises(ConfigError, match="single 16x16x16 window does not fit"):
        predict_whole(vol, grids, pred)
    assert pred.runner((16, 16, 16)).batch_size == 1


def test_gpu_batch_is_a_few_windows_and_shrinks_with_free_memory(monkeypatch):
    from deepict_dask.inference import devices

    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    assert devices.auto_batch_size("cuda", 128**3) == 4  # GPU_BATCH_VOXELS, not all the memory allows
    assert devices.auto_batch_size("cuda", 64**3) == 32
    assert devices.auto_batch_size("cuda", 512**3) == 1
    free["bytes"] = 2 * 2**30  # another process holds the rest: 2 windows of 128^3 fit in half of it
    assert devices.auto_batch_size("cuda", 128**3) == 2
    assert devices.auto_batch_size("cuda", 128**3, requested=7) == 7
    assert devices.auto_batch_size("cpu", 128**3) == devices.CPU_BATCH


def test_worker_processes_spread_over_the_gpus_of_a_node(monkeypatch):
    from distributed import Client, LocalCluster

    from deepict_dask.inference import devices

    slot = devices.process_slot
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(devices, "process_slot", lambda: 4)
    assert devices.process_gpu("cuda") == "cuda:1"
    assert devices.process_gpu("cuda:2") == "cuda:2" and devices.process_gpu("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.process_gpu("cuda") == "cuda"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        slots = [client.submit(slot, workers=[w], pure=False).result() for w in client.scheduler_info()["workers"]]
    assert sorted(slots) == [0, 1]  # inside tasks: LocalCluster names its workers 0, 1, ...


def test_gpu_annotation_survives_optimization(vol):
    x = da.from_array(vol, chunks=8) * 2
    out = blockwise_predict(x, grids_3d(vol.shape, 16, 3, "crop"), x.chunks, PredictorRef("m", loader=load_tiny3d),
                            2, out_dtype="uint8", gpu=True)
    stored = out.rechunk((1, 8, 8, 8)) + 0
    with dask.config.set({"optimization.fuse.active": False}):
        graph = stored.__dask_optimize__(stored.__dask_graph__(), stored.__dask_keys__())
    annotated = [name for name, layer in graph.layers.items() if layer.annotations]
    assert len(annotated) == 1 and annotated[0].startswith(out.name)
    assert graph.layers[annotated[0]].annotations == {"resources": {"GPU": 1}}
    plain = blockwise_predict(x, grids_3d(vol.shape, 16, 3, "crop"), x.chunks, PredictorRef("m", loader=load_tiny3d), 2)
    assert not plain.dask.layers[plain.name].annotations


def test_model_loaded_once_per_process_and_tasks_carry_only_a_reference(vol):
    worker_cache.clear_cache()
    ref = PredictorRef("model.safetensors", sha256="ab" * 32, loader=load_tiny3d)
    assert len(pickle.dumps(ref)) < 500
    before = worker_cache.LOADS["count"]
    x = da.from_array(vol, chunks=6)
    out = blockwise_predict(x, grids_3d(vol.shape, 16, 3, "crop"), x.chunks, ref, 2)
    out.compute(scheduler="threads", num_workers=2)
    assert worker_cache.LOADS["count"] - before == 1


def test_fold_batchnorm_keeps_outputs():
    torch.manual_seed(0)
    net = UNet3D(depth=2, initial_filters=4, batch_norm=True).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-4)


def test_predict_volume_normalizes_globally_whatever_the_chunks(vol):
    ref = PredictorRef("tiny", loader=load_tiny3d)
    opts = PredictOptions(window=16, margin=3, chunk=10)
    results = []
    for chunks in [(5, 7, 9), 30]:
        v = make_volume(vol * 50 + 1000, 10.0, chunks=chunks)
        results.append(predict_volume(v, ref, opts).probabilities.data.compute(scheduler="sync"))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    whole = predict_whole((vol - vol.mean()) / vol.std(), grids_3d(vol.shape, 16, 3, "crop"), ref())
    np.testing.assert_allclose(results[0], whole, atol=1e-4)


def test_prediction_for_storing_is_quantized_in_the_tasks(vol):
    """as_stored: the tasks emit uint8 (no float32 block held until the store), bit-identical to
    quantizing the float32 map; paths that post-process floats (TTA variance) stay float32."""
    ref = PredictorRef("tiny", loader=load_tiny3d)
    opts = PredictOptions(window=16, margin=3, chunk=10)
    v = make_volume(vol * 50 + 1000, 10.0, chunks=(5, 7, 9))
    floats = predict_volume(v, ref, opts).probabilities
    stored = predict_volume(v, ref, opts, as_stored=True).probabilities
    assert floats.dtype == np.float32 and stored.dtype == np.uint8
    np.testing.assert_array_equal(stored.data.compute(scheduler="sync"),
                                  quantize(floats.data.compute(scheduler="sync"), "uint8"))
    tta = predict_volume(v, PredictorRef("tiny", loader=load_tiny3d, tta="rotations"), opts, as_stored=True)
    assert tta.variance is not None and tta.probabilities.dtype == np.float32


def test_bad_inputs_are_clear_errors(vol):
    ref = PredictorRef("tiny", loader=load_tiny3d)
    nan = vol.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_volume(make_volume(nan, 10.0, chunks=8), ref)
    with pytest.raises(InputError, match="constant"):
        predict_volume(make_volume(np.ones((8, 8, 8), np.float32), 10.0), ref)
    with pytest.raises(InputError, match="voxel"):
        predict_volume(make_volume(vol, 20.0), ref, PredictOptions(rescale=False))
    with pytest.raises(InputError, match="channel"):
        predict_volume(make_volume(np.stack([vol, vol]), 10.0), ref)
    with pytest.raises(ValueError, match="window 6 leaves nothing after cropping margin 3"):
        PredictOptions(window=6, margin=3)  # both given: refused when the options are built
    with pytest.raises(ConfigError, match="window 6 leaves nothing after cropping margin 12"):
        predict_volume(make_volume(vol, 10.0), ref, PredictOptions(window=6))  # the 3D default margin
    with pytest.raises(ConfigError, match="input channels"):
        Predictor(tiny_net(), tiny_info(in_channels=2))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            choose_device("cuda")


def test_unet_windows_of_any_size_are_accepted_without_tracing(monkeypatch):
    net = UNet3D(out_channels=2, depth=2, initial_filters=2).eval()
    for size in ((13, 17, 20), (5, 9, 7)):  # not multiples of 2**depth: padded inside, cropped back
        with torch.no_grad():
            assert tuple(net(torch.zeros((1, 1) + size)).shape[2:]) == size
    pred = Predictor(net, tiny_info())
    import copy

    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("a U-Net window needs no meta trace"))
    monkeypatch.setattr(pred, "forward", lambda *a: pytest.fail("the check must not compute"))
    pred.check_window((13, 17, 160))


def test_voxel_size_mismatch_is_rescaled_and_mapped_back(vol):
    ref = PredictorRef("tiny", loader=load_tiny3d)
    coarse = make_volume(vol, 20.0, chunks=8)  # twice the model's voxel size: predicted on a 2x grid
    pred = predict_volume(coarse, ref, PredictOptions(window=16, margin=3, chunk=16))
    p = pred.probabilities.data.compute(scheduler="sync")
    assert p.shape == (2,) + vol.shape and np.isfinite(p).all() and 0 <= p.min() and p.max() <= 1
    assert pred.params["rescale_factors"] == [2.0, 2.0, 2.0]
    assert pred.probabilities.attrs["voxel_size"] == (20.0, 20.0, 20.0)


def test_window_check_needs_no_forward_pass_and_channels_last_changes_nothing(vol, monkeypatch):
    shrink = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))  # unpadded: the output is 2 voxels smaller
    pred = Predictor(shrink, tiny_info())
    monkeypatch.setattr(pred, "forward", lambda *a: pytest.fail("the check must not compute"))
    with pytest.raises(ConfigError, match="expected 2 channels of the same size"):
        pred.check_window((16, 16, 16))
    ok = Predictor(tiny_net(), tiny_info())
    monkeypatch.setattr(ok, "forward", lambda *a: pytest.fail("the check must not compute"))
    ok.check_window((16, 16, 16))
    cl, plain = Predictor(tiny_net(), tiny_info()), Predictor(tiny_net(), tiny_info(), channels_last=False)
    assert cl.channels_last and not plain.channels_last and cl.runner((64, 64, 64)).batch_size == 2  # CPU defaults
    grids = grids_3d(vol.shape, 16, 3, "crop")
    np.testing.assert_allclose(predict_whole(vol, grids, cl), predict_whole(vol, grids, plain), atol=1e-5)


def test_import_turns_on_huge_pages_for_torch_unless_the_user_chose():
    import os
    import subprocess
    import sys

    code = "import deepict_dask, os; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "1"
    env["THP_MEM_ALLOC_ENABLE"] = "0"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "0"
