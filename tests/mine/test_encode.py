"""Encoding patch stacks: codes equal a direct forward pass, one model load per worker, CPU fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from deepict_dask.errors import InputError
from deepict_dask.inference import worker_cache
from deepict_dask.mine import EncodeOptions, encode_patches
from deepict_dask.mine.encode import decode_codes
from deepict_dask.models import demo_model_path, save_model
from deepict_dask.models.autoencoder import Autoencoder3D, autoencoder_info

PATCH = (16, 16, 16)


def _model(path, seed=0):
    torch.manual_seed(seed)
    net = Autoencoder3D(patch_shape=PATCH, code_dim=6, filters=4)
    save_model(path, net, autoencoder_info("ae-test", patch_shape=PATCH, code_dim=6, filters=4, voxel_size=10.0))
    return net.eval()


@pytest.fixture
def stack(grid_stack):
    return grid_stack[1]  # 18 patches of PATCH


def test_codes_equal_a_direct_forward_pass_and_the_model_loads_once(stack, monkeypatch):
    net = _model(stack.autoencoder)
    worker_cache.clear_cache()
    before = worker_cache.LOADS["count"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # device auto falls back to the CPU
    codes = encode_patches(stack, options=EncodeOptions(device="auto", batch_size=3))[:]
    assert worker_cache.LOADS["count"] - before == 1  # 4 chunks, one model load in this process
    patches = torch.from_numpy(zarr.open_array(str(stack.patches), mode="r")[:][:, None])
    with torch.no_grad():
        direct = net.encode(patches).numpy()
    assert codes.shape == (18, 6)
    np.testing.assert_allclose(codes, direct, rtol=1e-4, atol=1e-5)
    stored = zarr.open_array(str(stack.codes), mode="r")
    assert stored.chunks == (5, 6) and stored.attrs["model"] == "ae-test"
    with torch.no_grad():
        expect = net.decode(torch.from_numpy(codes[:2])).numpy()[:, 0]
    np.testing.assert_allclose(decode_codes(stack.autoencoder, codes[:2], "cpu"), expect, rtol=1e-4, atol=1e-5)


def test_segmentation_model_and_wrong_patch_shape_are_refused(stack, tmp_path):
    with pytest.raises(InputError, match="is a segmentation model, not an autoencoder"):
        encode_patches(stack, demo_model_path("demo3d"), EncodeOptions(device="cpu"))
    torch.manual_seed(0)
    other = tmp_path / "ae32.safetensors"
    save_model(other, Autoencoder3D(patch_shape=(32, 32, 32), code_dim=4, filters=2),
               autoencoder_info("ae32", code_dim=4, filters=2))
    with pytest.raises(InputError, match=r"patches of \[16, 16, 16\] voxels do not fit the autoencoder 'ae32'"):
        encode_patches(stack, other, EncodeOptions(device="cpu"))
    assert not stack.codes.exists()


def test_encoding_on_a_distributed_cluster_gives_the_same_codes(stack):
    from distributed import Client, LocalCluster

    _model(stack.autoencoder)
    sync = encode_patches(stack, options=EncodeOptions(device="cpu"))[:]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster):
        dist = encode_patches(stack, options=EncodeOptions(device="cpu"))[:]
    np.testing.assert_allclose(dist, sync, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("codes", ["autoencoder", "invariant"])
def test_nearest_clusters_without_a_stack_equal_the_stack_path(grid_stack, codes):
    """Cut + encode + assign in one task per chunk (``filter`` without ``--into``) gives the clusters that
    the patch stack, its codes array and :func:`assign` give, whatever the chunking."""
    from deepict_dask.io import open_volume
    from deepict_dask.io.coords import make_table
    from deepict_dask.mine import PatchOptions
    from deepict_dask.mine.encode import invariant_scaling, nearest_clusters, write_codes_from
    from deepict_dask.mine.kmeans import assign
    from deepict_dask.mine.patches import patch_reader

    path, layout = grid_stack
    _model(layout.autoencoder)
    opts = EncodeOptions(device="cpu", codes=codes)
    stored = encode_patches(layout, options=opts)[:]
    centres = stored[[0, 7, 13]].astype(np.float64) + 0.01  # three centres near three patches
    zyx = [(z, y, x) for z in (12, 30, 48) for y in (12, 30, 48) for x in (20, 40)]
    table, reader = patch_reader({"tomoA": open_volume(path)},
                                 make_table("tomoA", "grid", zyx=np.asarray(zyx), voxel_size=10.0),
                                 PatchOptions(patch_shape=PATCH))
    np.testing.assert_array_equal(reader.part(0, 18).read(), zarr.open_array(str(layout.patches))[:])
    assert table["patch"].tolist() == list(range(18))
    scaling = invariant_scaling(layout.codes) if codes == "invariant" else None
    for chunk in (4, 18):
        got = nearest_clusters(reader, centres, model=layout.autoencoder, opts=opts, scaling=scaling, chunk=chunk)
        np.testing.assert_array_equal(got, assign(stored, centres))
    assert set(assign(stored, centres).tolist()) == {0, 1, 2}
    # the codes themselves, written without a stack: the same values and the same attributes
    out = write_codes_from(reader, layout.root / "fused.zarr", model=layout.autoencoder, opts=opts,
                           scaling=scaling if codes == "invariant" else None, chunk=4)
    fused = zarr.open_array(str(out), mode="r")
    if codes == "invariant":  # the stack path z-scored with its own statistics: the same scaling given here
        np.testing.assert_array_equal(fused[:], stored)
    else:
        np.testing.assert_allclose(fused[:], stored, rtol=1e-5, atol=1e-6)
    assert dict(fused.attrs) == dict(zarr.open_array(str(layout.codes), mode="r").attrs) and fused.chunks[0] == 4


def test_nearest_clusters_refuses_what_cannot_match_the_reference(grid_stack, tmp_path):
    from deepict_dask.io import open_volume
    from deepict_dask.io.coords import make_table
    from deepict_dask.mine import PatchOptions
    from deepict_dask.mine.encode import nearest_clusters
    from deepict_dask.mine.patches import patch_reader

    path, _layout = grid_stack
    _table, reader = patch_reader({"tomoA": open_volume(path)},
                                  make_table("tomoA", "grid", zyx=np.asarray([(30, 30, 30)]), voxel_size=10.0),
                                  PatchOptions(patch_shape=PATCH))
    inv = EncodeOptions(codes="invariant")
    with pytest.raises(InputError, match="need the reference's scaling"):
        nearest_clusters(reader, np.zeros((2, 4)), opts=inv)
    with pytest.raises(InputError, match=r"the reference codes have 5 descriptors but patches of \[16, 16, 16\]"):
        nearest_clusters(reader, np.zeros((2, 5)), opts=inv, scaling=(np.zeros(5), np.ones(5)))
    with pytest.raises(InputError, match="need the autoencoder model"):
        nearest_clusters(reader, np.zeros((2, 6)), opts=EncodeOptions(device="cpu"))
    torch.manual_seed(0)
    other = tmp_path / "ae32.safetensors"
    save_model(other, Autoencoder3D(patch_shape=(32, 32, 32), code_dim=4, filters=2),
               autoencoder_info("ae32", code_dim=4, filters=2))
    with pytest.raises(InputError, match=r"patches of \[16, 16, 16\] voxels do not fit the autoencoder 'ae32'"):
        nearest_clusters(reader, np.zeros((2, 4)), model=other, opts=EncodeOptions(device="cpu"))
