"""OME-Zarr writing (pyramid, metadata, atomicity, sub-groups, labels) and Zarr/OME-Zarr reading."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from deepict_dask.errors import InputError, OutputError
from deepict_dask.io import make_volume, open_volume, write_ome_zarr
from tests.helpers import mrc_file

pytestmark = pytest.mark.usefixtures("sync_scheduler")  # every test here computes synchronously


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).normal(size=(20, 34, 27)).astype(np.float32)


def _ngff(path):
    """The NGFF block of a group's attributes, whatever the version."""
    if (path / ".zattrs").exists():
        return json.loads((path / ".zattrs").read_text())
    return json.loads((path / "zarr.json").read_text())["attributes"]["ome"]


def _mean2(a):
    """Reference 2x mean with partial neighbourhoods at odd edges."""
    out = np.zeros(tuple((n + 1) // 2 for n in a.shape))
    for idx in np.ndindex(out.shape):
        out[idx] = a[tuple(slice(2 * i, 2 * i + 2) for i in idx)].mean()
    return out


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_mrc_to_ome_zarr_round_trip(tmp_path, data, version):
    src = tmp_path / "tomo.mrc"
    mrc_file(src, data, (4.0, 3.0, 2.5))  # x, y, z: anisotropic
    out = write_ome_zarr(open_volume(src, chunks=8), tmp_path / "tomo.ome.zarr", chunks=8, ngff_version=version)
    # plain zarr: three levels, data identical at level 0
    root = zarr.open_group(str(out), mode="r")
    assert root.metadata.zarr_format == (2 if version == "0.4" else 3)
    np.testing.assert_array_equal(root["0"][:], data)
    assert root["0"].chunks == (8, 8, 8)
    assert [root[str(k)].shape for k in range(3)] == [(20, 34, 27), (10, 17, 14), (5, 9, 7)]
    np.testing.assert_allclose(root["1"][:], _mean2(data), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(root["2"][:], _mean2(root["1"][:]), rtol=1e-5, atol=1e-6)
    # metadata: Angstrom scale per level, axes units
    ms = _ngff(out)["multiscales"][0]
    assert [a["unit"] for a in ms["axes"]] == ["angstrom"] * 3
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[2.5, 3.0, 4.0], [5.0, 6.0, 8.0], [10.0, 12.0, 16.0]]
    deepict = root.attrs["deepict"]
    assert deepict["source"] == str(src) and deepict["mrc_header"]["nx"] == 27
    assert deepict["stats"]["nonfinite"] == 0
    assert deepict["stats"]["mean"] == pytest.approx(float(data.mean()), abs=1e-6)
    # our reader: voxel size and origin of a coarser level
    lvl1 = open_volume(out, level=1)
    assert lvl1.attrs["voxel_size"] == (5.0, 6.0, 8.0)
    assert lvl1.attrs["origin"] == (1.25, 1.5, 2.0)  # centre of the first 2x2x2 block
    assert lvl1.attrs["mrc_header"]["nx"] == 27
    np.testing.assert_array_equal(open_volume(out).values, data)
    # no temporary directories left
    assert sorted(os.listdir(tmp_path)) == ["tomo.mrc", "tomo.ome.zarr"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_py_reads_it(tmp_path, data, version):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    vol = make_volume(data, (2.0, 3.0, 4.0))
    out = write_ome_zarr(vol, tmp_path / "a.ome.zarr", chunks=16, ngff_version=version)
    fmt = FormatV04() if version == "0.4" else FormatV05()
    nodes = list(Reader(parse_url(str(out), fmt=fmt))())
    image = nodes[0]
    assert any(isinstance(s, Multiscales) for s in image.specs)
    assert [d.shape for d in image.data] == [(20, 34, 27), (10, 17, 14), (5, 9, 7)]
    np.testing.assert_array_equal(np.asarray(image.data[0]), data)
    assert image.metadata["coordinateTransformations"][1][0]["scale"] == [4.0, 6.0, 8.0]
    assert [a["unit"] for a in image.metadata["axes"]] == ["angstrom"] * 3


def test_channels_and_custom_attrs(tmp_path):
    arr = np.random.default_rng(2).random((3, 8, 10, 12)).astype(np.float32)
    vol = make_volume(arr, 5.0, channels=["background", "ribosome", "membrane"])
    out = write_ome_zarr(vol, tmp_path / "p.ome.zarr", chunks=4, levels=2, attrs={"model": "unet-v1"})
    back = open_volume(out)
    assert back.dims == ("c", "z", "y", "x")
    assert list(back["c"].values) == ["background", "ribosome", "membrane"]
    assert back.attrs["model"] == "unet-v1"
    np.testing.assert_array_equal(back.values, arr)
    assert zarr.open_group(str(out), mode="r")["0"].chunks == (1, 4, 4, 4)
    assert open_volume(out, level=1).shape == (3, 4, 5, 6)
    assert [c["label"] for c in _ngff(out)["omero"]["channels"]] == ["background", "ribosome", "membrane"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_sub_group_and_label_image(tmp_path, data, version):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    store = write_ome_zarr(make_volume(data, 2.0), tmp_path / "t.ome.zarr", chunks=8, ngff_version=version)
    pred = make_volume(data * 2, 2.0)
    g = write_ome_zarr(pred, store, group="predictions/unet", chunks=8, levels=2)
    assert g == store / "predictions" / "unet"
    np.testing.assert_array_equal(open_volume(store, group="predictions/unet").values, data * 2)
    np.testing.assert_array_equal(open_volume(g).values, data * 2)
    labels = make_volume((data > 1).astype(np.uint16) * 7, 2.0)
    lg = write_ome_zarr(labels, store, group="particles", label=True, chunks=8)
    assert lg == store / "labels" / "particles"
    assert _ngff(store / "labels")["labels"] == ["particles"]
    assert "image-label" in _ngff(lg)
    lvl1 = open_volume(store, group="labels/particles", level=1)
    np.testing.assert_array_equal(lvl1.values, labels.values[::2, ::2, ::2])  # strided, values kept
    assert lvl1.attrs["origin"] == (0.0, 0.0, 0.0)
    # the main image is untouched and ome-zarr-py sees the label image
    np.testing.assert_array_equal(open_volume(store).values, data)
    fmt = FormatV04() if version == "0.4" else FormatV05()
    nodes = list(Reader(parse_url(str(store), fmt=fmt))())
    assert any(isinstance(s, Label) for n in nodes for s in n.specs)
    # rewriting a group replaces it; no temporaries remain
    write_ome_zarr(pred * 0 + 1, store, group="predictions/unet", chunks=8, levels=1)
    assert open_volume(store, group="predictions/unet").values.max() == 1
    assert [p for p in os.listdir(store / "predictions") if ".tmp-" in p or ".old-" in p] == []
    with pytest.raises(OutputError, match="already exists"):
        write_ome_zarr(pred, store, group="predictions/unet", overwrite=False)


def test_failed_write_leaves_nothing(tmp_path, data):
    def boom(block):
        raise OSError(28, "No space left on device")

    vol = make_volume(data, 1.0, chunks=8)
    bad = vol.copy(data=vol.data.map_blocks(boom, dtype=vol.dtype))
    with pytest.raises(OutputError, match="No space left"):
        write_ome_zarr(bad, tmp_path / "x.ome.zarr", chunks=8)
    assert os.listdir(tmp_path) == []
    # a failed sub-group write leaves the store as it was
    store = write_ome_zarr(vol, tmp_path / "s.ome.zarr", chunks=8, levels=1)
    before = sorted(os.listdir(store))
    with pytest.raises(OutputError):
        write_ome_zarr(bad, store, group="predictions/unet", chunks=8)
    assert not (store / "predictions" / "unet").exists()
    assert [p for p in os.listdir(store / "predictions") if "tmp" in p] == []
    assert open_volume(store).shape == data.shape and sorted(os.listdir(store)) == sorted(before + ["predictions"])


@pytest.mark.parametrize("fmt", [2, 3])
def test_plain_zarr_arrays(tmp_path, data, fmt):
    path = tmp_path / f"v{fmt}.zarr"
    arr = zarr.create_array(str(path), shape=data.shape, chunks=(10, 10, 10), dtype="f4", zarr_format=fmt)
    arr[:] = data
    arr.attrs["voxel_size"] = [2.0, 3.0, 4.0]
    v = open_volume(path)
    assert v.attrs["voxel_size"] == (2.0, 3.0, 4.0)
    assert v.data.chunks[0] == (10, 10)
    np.testing.assert_array_equal(v.values, data)
    assert open_volume(path, chunks=5).data.chunks[1] == (5,) * 6 + (4,)


def test_foreign_ome_zarr_in_nanometers_with_time_axis(tmp_path, data):
    """NGFF 0.4 written by another tool: t,c,z,y,x axes, nanometre units, a global scale."""
    root = zarr.open_group(str(tmp_path / "f.zarr"), mode="w", zarr_format=2)
    root.create_array("s0", shape=(1, 1) + data.shape, chunks=(1, 1, 8, 8, 8), dtype="f4")[:] = data[None, None]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": d, "type": "space", "unit": "nanometer"} for d in "zyx"
    ]
    root.attrs["multiscales"] = [{
        "version": "0.4", "axes": axes,
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 0.5, 0.5, 1.0]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2, 2, 2]}],
    }]
    v = open_volume(tmp_path / "f.zarr")
    assert v.dims == ("c", "z", "y", "x") and v.shape == (1,) + data.shape
    assert v.attrs["voxel_size"] == (10.0, 10.0, 20.0)


def test_zarr_bad_inputs(tmp_path, data):
    with pytest.raises(InputError, match="no such file"):
        open_volume(tmp_path / "missing.ome.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError, match="not a Zarr store"):
        open_volume(tmp_path / "empty.zarr")
    store = write_ome_zarr(make_volume(data, 1.0), tmp_path / "s.ome.zarr", chunks=16, levels=2)
    with pytest.raises(InputError, match="level 2 does not exist"):
        open_volume(store, level=2)
    with pytest.raises(InputError, match="no group or array 'predictions/x'"):
        open_volume(store, group="predictions/x")
    write_ome_zarr(make_volume(data, 1.0), store, group="predictions/unet", chunks=16, levels=1)
    with pytest.raises(InputError, match="it contains: unet"):
        open_volume(store, group="predictions")
    flat = zarr.create_array(str(tmp_path / "flat.zarr"), shape=(4, 5), dtype="f4")
    assert flat.ndim == 2
    with pytest.raises(InputError, match="3D"):
        open_volume(tmp_path / "flat.zarr")
