"""Every kind of OME-Zarr store the package writes validates with ome-zarr-models and opens with
ome-zarr-py's Reader: convert output, ``deepict predict`` stores, and a run directory's store with its
``filtered``, ``predictions/<model>`` and ``labels/<target>`` images."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import zarr

from deepict_dask.cli.main import main
from deepict_dask.errors import OutputError
from deepict_dask.inference.predict import PredictOptions, make_ref, predict_file
from deepict_dask.io import make_volume, open_volume, write_ome_zarr
from tests.helpers import mrc_file, tiny_model

models = pytest.importorskip("ome_zarr_models", reason="ome-zarr-models validates the written metadata")
reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr-py is the reference reader")


def _validate(path, kind: str, version: str = "0.4"):
    """Validate one group with the ome-zarr-models class of its kind (raises on any violation)."""
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05

    mod = v04 if version == "0.4" else v05
    cls = {"image": mod.Image, "label": mod.ImageLabel, "labels": mod.Labels}[kind]
    return cls.from_zarr(zarr.open_group(str(path), mode="r"))


def _nodes(path, version: str = "0.4"):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url

    fmt = FormatV04() if version == "0.4" else FormatV05()
    return list(reader.Reader(parse_url(str(path), fmt=fmt))())


def _spec_names(node) -> set[str]:
    return {type(s).__name__ for s in node.specs}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_convert_output_validates_and_opens_with_exact_voxel_size(tmp_path, no_cluster, version):
    data = np.random.default_rng(0).normal(size=(12, 20, 18)).astype(np.float32)
    src = mrc_file(tmp_path / "t.mrc", data, (13.48, 13.48, 13.48))
    assert main(["convert", str(src), "--out", str(tmp_path / "out"), "--ngff", version, "--levels", "2",
                 "--chunks", "8", "--no-progress"]) == 0
    store = tmp_path / "out" / "t.ome.zarr"
    image = _validate(store, "image", version)
    scales = [d.coordinateTransformations[0].scale for d in image.attributes.multiscales[0].datasets] \
        if version == "0.4" else \
        [d.coordinateTransformations[0].scale for d in image.attributes.ome.multiscales[0].datasets]
    assert scales == [[13.48] * 3, [26.96] * 3]  # the decimal the header means, not 13.479999542236328
    (node,) = _nodes(store, version)
    assert "Multiscales" in _spec_names(node)
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    assert [d.shape for d in node.data] == [(12, 20, 18), (6, 10, 9)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), data)


@pytest.mark.parametrize("dtype,window", [("uint8", (0, 255)), ("float32", (0, 1))])
def test_channel_images_have_windows_and_distinct_colours(tmp_path, dtype, window):
    arr = (np.random.default_rng(1).random((3, 6, 8, 10)) * window[1]).astype(dtype)
    vol = make_volume(arr, 5.0, channels=["ribosome", "membrane", "fas"])
    for version in ("0.4", "0.5"):
        out = write_ome_zarr(vol, tmp_path / f"p{version}.ome.zarr", chunks=4, levels=2, ngff_version=version,
                             value_range=window, stats=False)
        _validate(out, "image", version)
        (node,) = _nodes(out, version)
        assert node.metadata["channel_names"] == ["ribosome", "membrane", "fas"]
        assert node.metadata["contrast_limits"] == [list(map(float, window))] * 3
        colours = [tuple(c[1]) for c in node.metadata["colormap"]]
        assert len(set(colours)) == 3




def test_predict_store_is_an_image_with_predictions_and_labels(tmp_path):
    data = np.random.default_rng(2).normal(size=(16, 24, 20)).astype(np.float32)
    src = mrc_file(tmp_path / "tomo.mrc", data, 10.0)
    options = PredictOptions(window=16, margin=2, chunk=32, threshold=0.5)
    with dask.config.set(scheduler="synchronous"):
        group = predict_file(src, make_ref(tiny_model(tmp_path / "m.safetensors", classes=("ribosome", "membrane")), options), tmp_path / "out", options)
    store = tmp_path / "out" / "tomo.ome.zarr"
    assert group == store / "predictions" / "tiny"
    # the store itself is the tomogram image; its label image points back to it
    _validate(store, "image")
    _validate(store / "labels", "labels")
    label = _validate(store / "labels" / "tiny", "label")
    assert [c.label_value for c in label.attributes.image_label.colors] == [0, 1, 2]
    pred = _validate(group, "image")
    channels = pred.attributes.omero.channels
    assert [c.window.model_dump() for c in channels] == [{"min": 0, "max": 255, "start": 0, "end": 255}] * 2
    assert len({c.color for c in channels}) == 2
    np.testing.assert_array_equal(open_volume(store).values, data)
    nodes = _nodes(store)
    assert "Multiscales" in _spec_names(nodes[0]) and nodes[0].data[0].shape == (16, 24, 20)
    assert any("Label" in _spec_names(n) for n in nodes)
    (pnode,) = _nodes(group)
    assert pnode.metadata["channel_names"] == ["ribosome", "membrane"]
    # a second tomogram of the same name but another shape is not silently mixed in
    (tmp_path / "other").mkdir()
    mrc_file(tmp_path / "other" / "tomo.mrc", data[:8], 10.0)
    with pytest.raises(OutputError, match="holds another tomogram"):
        predict_file(tmp_path / "other" / "tomo.mrc", make_ref(tmp_path / "m.safetensors", options),
                     tmp_path / "out", options)


def test_run_directory_store_validates_and_opens(tmp_path):
    import distributed

    from deepict_dask.pipeline.config import load_config
    from deepict_dask.pipeline.run import run_workflow

    (tmp_path / "tomos").mkdir()
    mrc_file(tmp_path / "tomos" / "t0.mrc", np.random.default_rng(3).normal(size=(16, 24, 24)).astype(np.float32), 10.0)
    tiny_model(tmp_path / "tiny.safetensors", classes=("ribosome", "membrane"))
    (tmp_path / "run.yaml").write_text(
        "inputs: {paths: [\"tomos/*.mrc\"]}\n"
        "output: {dir: run, chunks: 16, levels: 2}\n"
        "preprocess: {normalize: true, filter: {enabled: false}}\n"
        "models:\n  - {name: m3, path: tiny.safetensors, patch: 16, overlap: 2}\n"
        "targets:\n  - {name: membrane, model: m3, kind: segmentation}\n"
        "  - {name: ribosome, model: m3, pick: {threshold: 0.5, min_size: 1}}\n"
    )
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        result = run_workflow(load_config(tmp_path / "run.yaml"), client=client, evaluate=False)
    assert result.exit_code == 0, {n: o.reason for n, o in result.outcomes.items()}
    store = tmp_path / "run" / "tomograms" / "t0.ome.zarr"
    _validate(store, "image")
    _validate(store / "filtered", "image")
    _validate(store / "predictions" / "tiny", "image")  # named after the model file's model
    _validate(store / "labels", "labels")
    for target in ("membrane", "ribosome"):
        _validate(store / "labels" / target, "label")
    assert sorted(json.loads((store / "labels" / ".zattrs").read_text())["labels"]) == ["membrane", "ribosome"]
    nodes = _nodes(store)
    assert "Multiscales" in _spec_names(nodes[0])
    assert sum("Label" in _spec_names(n) for n in nodes) == 2


@pytest.mark.parametrize("dtype", ["complex64", "|S4", "<U3"])
def test_unsupported_dtype_in_an_ome_zarr_is_one_line_error(tmp_path, no_cluster, capsys, dtype):
    store = tmp_path / "bad.ome.zarr"
    write_ome_zarr(make_volume(np.zeros((4, 4, 4), np.float32), 2.0), store, levels=1, stats=False)
    meta = json.loads((store / "0" / ".zarray").read_text())
    meta.update(dtype=np.dtype(dtype).str, fill_value=None)
    (store / "0" / ".zarray").write_text(json.dumps(meta))
    for cmd in (["convert", str(store), "--out", str(tmp_path / "o"), "--no-progress"],
                ["pick", str(store), "--out", str(tmp_path / "p.csv"), "--workers", "1", "--no-progress"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if ": error: " in line]
        assert len(lines) == 1 and "bad.ome.zarr" in lines[0] and "unsupported array dtype" in lines[0], err
        assert "Traceback" not in err
