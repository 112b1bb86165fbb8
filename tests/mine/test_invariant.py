"""Rotation-invariant codes: the descriptors ignore orientation, tell planes from blobs, and encode in chunks."""

from __future__ import annotations

import re

import dask
import numpy as np
import pytest
import zarr
from scipy import ndimage

from deepict_dask.errors import InputError
from deepict_dask.io.coords import make_table
from deepict_dask.mine import (
    ClusterOptions,
    EncodeOptions,
    MineLayout,
    PatchOptions,
    encode_patches,
    extract_patches,
    write_gallery,
)
from deepict_dask.mine import api as mine_api
from deepict_dask.mine.encode import codes_kind, invariant_scaling
from deepict_dask.mine.invariant import describe, descriptor_size, tensor_radii
from deepict_dask.mine.kmeans import nearest_members

EDGE = 24


def _grid() -> np.ndarray:
    a = np.arange(EDGE, dtype=np.float32) - (EDGE - 1) / 2
    return np.stack(np.meshgrid(a, a, a, indexing="ij"))


def _slab(normal, noise: float = 0.2, seed: int = 0) -> np.ndarray:
    """A dark membrane-like plane (Gaussian profile, sigma 1.5) through the centre, with noise."""
    n = np.asarray(normal, np.float32) / np.linalg.norm(normal)
    dist = np.tensordot(n, _grid(), axes=1)
    rng = np.random.default_rng(seed)
    return (-2.0 * np.exp(-dist**2 / (2 * 1.5**2)) + rng.normal(0, noise, dist.shape)).astype(np.float32)


def _blob(noise: float = 0.2, seed: int = 0) -> np.ndarray:
    r2 = (_grid() ** 2).sum(0)
    rng = np.random.default_rng(seed)
    return (-2.0 * np.exp(-r2 / (2 * 3.0**2)) + rng.normal(0, noise, r2.shape)).astype(np.float32)


def _tensor_shares(d: np.ndarray, sigma_index: int, radius_index: int) -> np.ndarray:
    """The three eigenvalue shares of one structure-tensor sphere in a descriptor vector."""
    shells = 3 * (EDGE // 2)
    at = shells + 4 * (sigma_index * len(tensor_radii((EDGE,) * 3)) + radius_index)
    return d[..., at + 1 : at + 4]


def test_axis_turns_and_flips_leave_the_descriptors_unchanged():
    patch = _slab([1, 2, 0.5]) + 0.5 * _blob(seed=3)
    turned = [np.rot90(patch, 1, axes=(0, 1)), np.rot90(patch, 2, axes=(1, 2)), patch[::-1], patch.transpose(2, 0, 1),
              np.rot90(patch, 3, axes=(0, 2))[:, ::-1]]
    d = describe(np.stack([patch, *turned]))
    assert d.shape == (6, descriptor_size((EDGE,) * 3)) and d.dtype == np.float32
    for other in d[1:]:
        np.testing.assert_allclose(other, d[0], rtol=1e-4, atol=1e-4)


def test_an_oblique_turn_moves_a_membrane_far_less_than_a_blob_differs_from_it():
    slab = _slab([0, 0, 1])
    oblique = _slab([1, 1, 1], seed=1)  # the same plane turned by 55 degrees, other noise
    rotated = ndimage.rotate(slab, 30, axes=(0, 2), reshape=False, mode="nearest")
    d = describe(np.stack([slab, oblique, rotated, _blob(), _blob(seed=5)]))
    z = (d - d.mean(0)) / (d.std(0) + 1e-6)
    dist = lambda a, b: float(np.linalg.norm(z[a] - z[b]))  # noqa: E731
    assert dist(0, 1) < 0.35 * dist(0, 3) and dist(0, 2) < 0.5 * dist(0, 3)
    assert dist(3, 4) < 0.35 * dist(0, 3)
    plane, blob = _tensor_shares(d[0], 1, 2), _tensor_shares(d[3], 1, 2)
    assert plane[0] > 0.8  # one dominant gradient direction: a plane
    assert blob[0] < 0.5 and blob[2] > 0.2  # no dominant direction: a blob


def test_non_cubic_and_small_patches_and_wrong_shapes():
    rng = np.random.default_rng(0)
    assert describe(rng.normal(size=(3, 12, 16, 20))).shape == (3, descriptor_size((12, 16, 20)))
    assert describe(rng.normal(size=(2, 4, 4, 4))).shape == (2, descriptor_size((4, 4, 4)))
    with pytest.raises(ValueError, match=r"\(N, Z, Y, X\)"):
        describe(rng.normal(size=(16, 16, 16)))


@pytest.fixture
def stack(grid_stack):
    return grid_stack  # (tomogram, layout): 18 patches of 16^3, chunks of 5


def test_invariant_codes_are_z_scored_descriptors_whatever_the_chunking(stack, tmp_path):
    _path, layout = stack
    codes = encode_patches(layout, options=EncodeOptions(codes="invariant"))[:]
    patches = zarr.open_array(str(layout.patches), mode="r")[:]
    raw = describe(patches).astype(np.float64)
    mean, std = invariant_scaling(layout.codes)
    np.testing.assert_allclose(mean, raw.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(codes, (raw - mean) / std, rtol=1e-4, atol=1e-4)
    assert codes_kind(layout.codes) == "invariant" and np.abs(codes.mean(0)).max() < 1e-4
    # one task per chunk (5 patches) or a single task: the same codes
    other = MineLayout.at(tmp_path / "other")
    other.root.mkdir()
    for name in ("patches.zarr", "patches.csv"):
        (other.root / name).symlink_to(layout.root / name)
    with dask.config.set(scheduler="sync"):
        whole = encode_patches(other, options=EncodeOptions(codes="invariant", chunk=100))[:]
    np.testing.assert_allclose(whole, codes, rtol=1e-5, atol=1e-5)
    # with a reference's scaling (new tomograms are compared with its clusters), that scaling is used
    shifted = (mean + 1.0, std * 2.0)
    again = encode_patches(other, options=EncodeOptions(codes="invariant"), scaling=shifted)[:]
    np.testing.assert_allclose(again, (raw - shifted[0]) / shifted[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="cut the new patches with the reference's patch shape"):
        encode_patches(other, options=EncodeOptions(codes="invariant"), scaling=(mean[:5], std[:5]))


def test_nearest_members_and_a_gallery_without_a_decoder(stack):
    path, layout = stack
    encode_patches(layout, options=EncodeOptions(codes="invariant"))
    labels = mine_api.cluster_codes(layout, ClusterOptions(k=3, batch_size=16))
    codes = zarr.open_array(str(layout.codes), mode="r")
    centres = np.asarray(__import__("json").loads(layout.cluster_centres.read_text())["centres"])
    members = nearest_members(codes, centres, labels, step=4)  # slices of 4: the running best is kept
    x = codes[:]
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        assert members[c] == idx[np.argmin(((x[idx] - centres[c]) ** 2).sum(1))]
    assert not layout.autoencoder.exists()  # invariant codes need no model, also for the gallery
    table = write_gallery(layout, [path])
    doc = layout.gallery.read_text()
    assert "most typical patch" in doc and "decoded" not in doc
    assert doc.count('src="data:image/png;base64,') == 3 * int((table["size"] > 0).sum())
    assert len(re.findall(r"<h3>Cluster \d+", doc)) == 3


def test_patches_all_alike_are_refused_before_clustering(tmp_path):
    from deepict_dask.io import write_mrc
    from deepict_dask.io.volume import make_volume
    from deepict_dask.mine.workflow import cluster

    flat = tmp_path / "flat.mrc"
    write_mrc(make_volume(np.full((40, 40, 40), 3.0, np.float32), voxel_size=10.0), flat)
    layout = MineLayout.at(tmp_path / "mine")
    zyx = np.asarray([(z, 20, 20) for z in (10, 20, 30)])
    extract_patches([flat], make_table("flat", "grid", zyx=zyx, voxel_size=10.0), layout,
                    PatchOptions(patch_shape=(8, 8, 8), normalization="none"))
    encode_patches(layout, options=EncodeOptions(codes="invariant"))
    assert np.all(np.isfinite(zarr.open_array(str(layout.codes))[:]))  # constant descriptors stay 0, no NaN
    with pytest.raises(InputError, match="the patches are all alike"):
        cluster(layout, ClusterOptions(k=2))
    assert not layout.labels.exists()


def test_new_tomograms_are_cut_like_the_reference(blob_mrc, tmp_path):
    """Patches of a new tomogram get the reference's normalisation and low-pass unless told otherwise:
    codes of differently prepared patches would land in the wrong clusters."""
    from deepict_dask.mine import CentreOptions
    from deepict_dask.mine.workflow import encode_new

    path = blob_mrc("tomoA")
    zyx = np.asarray([(z, 30, 30) for z in (12, 30, 48)])
    ref = MineLayout.at(tmp_path / "ref")
    extract_patches([path], make_table("tomoA", "grid", zyx=zyx, voxel_size=10.0), ref,
                    PatchOptions(patch_shape=(16, 16, 16), normalization="patch", lowpass_sigma=1.5))
    encode_patches(ref, options=EncodeOptions(codes="invariant"))
    new = MineLayout.at(tmp_path / "new")
    encode_new([blob_mrc("tomoB", seed=1)], new, None, CentreOptions(method="grid", stride=16),
               options=EncodeOptions(codes="invariant"), reference=ref)
    attrs = zarr.open_array(str(new.patches), mode="r").attrs
    assert (attrs["normalization"], attrs["lowpass_sigma"], attrs["patch_shape"]) == ("patch", 1.5, [16, 16, 16])
    other = MineLayout.at(tmp_path / "other")  # given explicitly, the caller's choice stands
    encode_new([blob_mrc("tomoC", seed=2)], other, None, CentreOptions(method="grid", stride=16),
               PatchOptions(), EncodeOptions(codes="invariant"), reference=ref)
    assert zarr.open_array(str(other.patches), mode="r").attrs["lowpass_sigma"] == 0.0


def _cut(path, root, sigma, chunk=5):
    """Patches of 16^3 on a grid of ``path``, low-passed with ``sigma``, under ``root``."""
    zyx = [(z, y, x) for z in (12, 30, 48) for y in (12, 30, 48) for x in (20, 40)]
    layout = MineLayout.at(root)
    extract_patches([path], make_table(path.stem, "grid", zyx=np.asarray(zyx), voxel_size=10.0), layout,
                    PatchOptions(patch_shape=(16, 16, 16), chunk=chunk, lowpass_sigma=sigma))
    return layout


def test_invariant_codes_describe_the_patches_without_the_stacks_low_pass(blob_mrc, tmp_path):
    """A stack low-passed for the autoencoder: its invariant codes describe the same patches cut again
    without the low-pass (the default), the same codes as a stack cut without it; ``invariant_lowpass``
    null or equal to the stack's describes the stack as it is."""
    from deepict_dask.mine.encode import described_patches

    path = blob_mrc("tomoA")
    plain, smooth = _cut(path, tmp_path / "plain", 0.0), _cut(path, tmp_path / "smooth", 1.5)
    want = encode_patches(plain, options=EncodeOptions(codes="invariant"))[:]
    got = encode_patches(smooth, options=EncodeOptions(codes="invariant"))[:]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert described_patches(smooth.codes) == {"normalization": "tomogram", "lowpass_sigma": 0.0}
    stack = zarr.open_array(str(smooth.patches), mode="r")[:]
    raw = describe(stack).astype(np.float64)
    for sigma in (None, 1.5):
        codes = encode_patches(smooth, options=EncodeOptions(codes="invariant", invariant_lowpass=sigma))[:]
        np.testing.assert_allclose(codes, (raw - raw.mean(0)) / raw.std(0), rtol=1e-3, atol=1e-3)
        assert described_patches(smooth.codes)["lowpass_sigma"] == 1.5
    assert not np.allclose(got, codes, atol=0.1)  # the low-pass does change what the descriptors see
    # another low-pass than the stack's, e.g. 0.7, is cut again too
    encode_patches(smooth, options=EncodeOptions(codes="invariant", invariant_lowpass=0.7))
    assert described_patches(smooth.codes)["lowpass_sigma"] == 0.7


def test_cutting_again_without_the_tomogram_is_one_clear_error(blob_mrc, tmp_path):
    path = blob_mrc("tomoA")
    smooth = _cut(path, tmp_path / "smooth", 1.5)
    path.rename(tmp_path / "moved.mrc")
    with pytest.raises(InputError, match=r"cut the patches again from their tomograms, but \['tomoA'\] are not listed "
                                         r"in tomograms.json or no longer exist; give the stack's own low-pass \(1.5\)"):
        encode_patches(smooth, options=EncodeOptions(codes="invariant"))
    assert not smooth.codes.exists()
    encode_patches(smooth, options=EncodeOptions(codes="invariant", invariant_lowpass=None))  # the stack alone
    assert smooth.codes.exists()


@pytest.mark.parametrize("keep_patches", [True, False], ids=["stack", "no-stack"])
def test_new_tomograms_are_described_like_the_reference_codes(blob_mrc, tmp_path, keep_patches):
    """New tomograms compared with a reference: a stack (if kept) like the reference's stack, codes like the
    reference's codes (unfiltered patches, the reference's scaling), with or without the stack."""
    from deepict_dask.mine import CentreOptions
    from deepict_dask.mine.encode import described_patches
    from deepict_dask.mine.workflow import encode_new, reference_codes

    ref = _cut(blob_mrc("tomoA"), tmp_path / "ref", 1.5)
    encode_patches(ref, options=EncodeOptions(codes="invariant"))
    options = reference_codes(ref, EncodeOptions(invariant_lowpass=2.0))  # the reference's choice wins
    assert (options.codes, options.invariant_lowpass) == ("invariant", 0.0)
    tomo_b = blob_mrc("tomoB", seed=1)
    new = MineLayout.at(tmp_path / "new")
    encode_new([tomo_b], new, None, CentreOptions(method="grid", stride=16), options=options, reference=ref,
               keep_patches=keep_patches)
    assert new.patches.exists() == keep_patches
    if keep_patches:
        assert zarr.open_array(str(new.patches), mode="r").attrs["lowpass_sigma"] == 1.5
    assert described_patches(new.codes) == {"normalization": "tomogram", "lowpass_sigma": 0.0}
    # the same as describing tomoB's unfiltered patches and z-scoring them with the reference's scaling
    plain = MineLayout.at(tmp_path / "plain")
    encode_new([tomo_b], plain, None, CentreOptions(method="grid", stride=16), PatchOptions(lowpass_sigma=0.0),
               options, reference=ref)
    np.testing.assert_allclose(zarr.open_array(str(new.codes))[:], zarr.open_array(str(plain.codes))[:],
                               rtol=1e-5, atol=1e-5)
    mean, std = invariant_scaling(ref.codes)
    raw = describe(zarr.open_array(str(plain.patches))[:]).astype(np.float64)
    np.testing.assert_allclose(zarr.open_array(str(new.codes))[:], (raw - mean) / std, rtol=1e-4, atol=1e-4)


def test_reference_codes_from_before_the_record_describe_stacks_as_they_are(stack):
    from deepict_dask.mine.workflow import reference_codes

    _path, layout = stack
    encode_patches(layout, options=EncodeOptions(codes="invariant"))
    arr = zarr.open_array(str(layout.codes), mode="r+")
    del arr.attrs["described_patches"]
    assert reference_codes(layout).invariant_lowpass is None
