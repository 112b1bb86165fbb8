"""``deepict mine``: the steps end to end on a tiny simulated tomogram, and every bad input as one line.

One module-scoped mining directory (grid patches of 16^3, an autoencoder trained for 2 epochs,
codes, k = 4) serves all tests; tests that change it work on a copy. LocalClusters run on threads.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from deepict_dask.cli.main import main
from deepict_dask.io import write_mrc
from deepict_dask.io.volume import make_volume
from deepict_dask.mine import MineLayout

SHAPE = (48, 64, 64)
PATCH = 16


def _threads(mp: pytest.MonkeyPatch) -> None:
    import deepict_dask.cluster as cluster

    real = cluster.make_cluster
    mp.setattr(cluster, "make_cluster", lambda spec: real(dataclasses.replace(
        spec, processes=False, dashboard_address="127.0.0.1:0")))


def _ok(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """(simulation dir, mining dir): two 48x64x64 tomograms; the first mined up to k-means with k = 4."""
    root = tmp_path_factory.mktemp("mine")
    sim, out = root / "sim", root / "m"
    with pytest.MonkeyPatch.context() as mp:
        _threads(mp)
        _ok("simulate", "-o", str(sim), "--n", "2", "--shape", *map(str, SHAPE), "--voxel-size", "10")
        _ok("mine", "patches", str(sim / "tomograms" / "sim_0000.mrc"), "-o", str(out), "--grid", "8",
            "--patch-size", str(PATCH), "--workers", "1")
        _ok("mine", "train-ae", str(out), "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--no-progress",
            "--filters", "4", "--code-dim", "8", "--centre-sigma", "3", "--augment")
        _ok("mine", "encode", str(out), "--device", "cpu", "--workers", "1")
        _ok("mine", "cluster", str(out), "--k", "4", "--seed", "0")
    return sim, out


@pytest.fixture
def threads(monkeypatch):
    _threads(monkeypatch)


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _largest_cluster(layout: MineLayout) -> int:
    labels = np.asarray(zarr.open_array(str(layout.labels), mode="r")[:])
    return int(np.bincount(labels).argmax())


def test_steps_to_edss3d_predict_and_pick(mined, tmp_path, threads, capsys):
    sim, out = mined
    layout = MineLayout.at(out)
    patches = pd.read_csv(layout.patches_table)
    stack = zarr.open_array(str(layout.patches), mode="r")
    assert stack.shape[1:] == (PATCH,) * 3 and len(patches) == stack.shape[0] > 4
    assert stack.attrs["voxel_size"] == 10.0  # the training of the autoencoder needs it
    assert zarr.open_array(str(layout.codes), mode="r").shape == (stack.shape[0], 8)
    assert json.loads(layout.cluster_centres.read_text())["k"] == 4

    _ok("mine", "gallery", str(out))
    clusters = pd.read_csv(layout.clusters_table)
    assert len(clusters) == 4 and clusters["size"].sum() == len(patches)
    assert "<html" in layout.gallery.read_text().lower()

    big = _largest_cluster(layout)
    weak = tmp_path / "weak"
    capsys.readouterr()
    _ok("mine", "labels", str(out), "--select", f"blob={big}", "-o", str(weak), "--device", "cpu",
        "--batch-size", "16", "--filters", "4")
    assert f"deepict train {weak / 'train.yaml'}" in capsys.readouterr().out
    meta = json.loads((weak / "classes.json").read_text())
    assert meta["classes"] == ["blob"] and meta["selection"] == {"blob": [big]}
    assert len(meta["patch_index"]) == int((np.asarray(zarr.open_array(str(layout.labels))[:]) == big).sum())
    config = yaml.safe_load((weak / "train.yaml").read_text())
    assert config["model"] == {"preset": "edss3d", "filters": 4} and config["activation"] == "softmax"
    assert config["data"]["batch_size"] == 16 and config["loss"] == [{"kind": "ce"}]
    assert config["data"]["patch_size"] == [12, 12, 12]  # random crops: objects not always centred
    assert config["data"]["patch_stack"] == {"patches": "patches.zarr", "labels": "labels.zarr"}

    _ok("train", str(weak / "train.yaml"), "--steps", "2", "--device", "cpu", "--no-progress")
    model = weak / "edss3d" / "edss3d.safetensors"
    assert model.is_file()
    pred = tmp_path / "pred"
    new = sim / "tomograms" / "sim_0001.mrc"
    _ok("predict", str(new), "--model", str(model), "-o", str(pred), "--device", "cpu", "--workers", "1",
        "--no-progress", "--patch", "48")  # EDSS3D is fully convolutional: any window
    picks = tmp_path / "picks.csv"
    _ok("pick", str(pred / "sim_0001.ome.zarr"), "-o", str(picks), "--workers", "1", "--no-progress")
    table = pd.read_csv(picks)
    assert list(table.columns[:5]) == ["tomo", "class", "x", "y", "z"]  # read back as a table (rows: untrained)


def test_filter_assigns_new_patches_to_the_nearest_centre(mined, tmp_path, threads):
    from deepict_dask.mine.kmeans import assign, read_centres

    sim, out = mined
    layout = MineLayout.at(out)
    big = _largest_cluster(layout)
    into, table = tmp_path / "new", tmp_path / "kept.csv"
    _ok("mine", "filter", str(out), str(sim / "tomograms" / "sim_0001.mrc"), "--select", f"blob={big}",
        "-o", str(table), "--into", str(into), "--grid", "8", "--device", "cpu", "--workers", "1")
    kept = pd.read_csv(table)
    nearest = assign(zarr.open_array(str(MineLayout.at(into).codes), mode="r"), read_centres(layout.cluster_centres))
    expected = np.flatnonzero(nearest == big)
    assert kept["patch"].tolist() == expected.tolist() and len(expected) > 0
    assert set(kept["class"]) == {"blob"} and set(kept["cluster"]) == {big} and set(kept["tomo"]) == {"sim_0001"}
    # without --into each task cuts, encodes and assigns its patches: the same clusters, nothing else written
    table2 = tmp_path / "kept2.csv"
    _ok("mine", "filter", str(out), str(sim / "tomograms" / "sim_0001.mrc"), "--select", f"blob={big}",
        "-o", str(table2), "--grid", "8", "--device", "cpu", "--workers", "1")
    again = pd.read_csv(table2)
    assert again["patch"].tolist() == expected.tolist()
    pd.testing.assert_frame_equal(again, kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.csv", "kept2.csv", "new"]
    # `mine encode DIR TOMO --into DIR2` cuts and encodes the same patches as filter did
    other = tmp_path / "other"
    _ok("mine", "encode", str(out), str(sim / "tomograms" / "sim_0001.mrc"), "--into", str(other), "--grid", "8",
        "--device", "cpu", "--workers", "1")
    np.testing.assert_array_equal(zarr.open_array(str(MineLayout.at(other).codes))[:],
                                  zarr.open_array(str(MineLayout.at(into).codes))[:])
    # --no-patches: the same codes and tables without a patch stack, enough to cluster
    lean = MineLayout.at(tmp_path / "lean")
    _ok("mine", "encode", str(out), str(sim / "tomograms" / "sim_0001.mrc"), "--into", str(lean.root), "--grid", "8",
        "--device", "cpu", "--workers", "1", "--no-patches")
    assert not lean.patches.exists() and lean.tomograms.exists()
    np.testing.assert_allclose(zarr.open_array(str(lean.codes))[:], zarr.open_array(str(MineLayout.at(other).codes))[:],
                               rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(lean.patches_table), pd.read_csv(MineLayout.at(other).patches_table))
    _ok("mine", "cluster", str(lean.root), "--k", "3")
    assert zarr.open_array(str(lean.labels)).shape == (len(pd.read_csv(lean.patches_table)),)


@pytest.mark.parametrize(("codes", "train"), [
    ("autoencoder", True), ("invariant", True), ("invariant", False)])
def test_run_config_does_the_unsupervised_part(mined, tmp_path, threads, capsys, codes, train):
    """Both kinds of codes; with invariant ones the autoencoder is still trained (the weak labels are its
    reconstructions) unless ``train: null``, and the gallery shows typical patches."""
    from deepict_dask.mine.encode import codes_kind

    sim, _ = mined
    train_text = "{max_epochs: 1, batch_size: 32, device: cpu, model: {filters: 2, code_dim: 4}}" if train else "null"
    (tmp_path / "mine.yaml").write_text(
        f"tomograms: [{sim / 'tomograms' / 'sim_0001.mrc'}]\nout: m\n"
        "centres: {method: grid, stride: 8}\npatches: {patch_shape: [16, 16, 16]}\n"
        f"train: {train_text}\n"
        f"encode: {{device: cpu, codes: {codes}}}\nchoose_k: {{ks: [2, 3]}}\ncluster: {{k: 3}}\n")
    capsys.readouterr()
    _ok("mine", "run", str(tmp_path / "mine.yaml"), "--workers", "1", "--no-progress")
    layout = MineLayout.at(tmp_path / "m")  # relative to the config file
    for path in (layout.patches, layout.codes, layout.labels, layout.choose_k_table, layout.gallery):
        assert path.exists(), path
    assert layout.autoencoder.exists() == train
    assert ("autoencoder: skipped (train: null)" in capsys.readouterr().out) == (not train)
    assert pd.read_csv(layout.choose_k_table)["k"].tolist() == [2, 3]
    assert len(pd.read_csv(layout.clusters_table)) == 3
    assert codes_kind(layout.codes) == codes
    assert ("most typical patch" in layout.gallery.read_text()) == (codes == "invariant")
    capsys.readouterr()
    assert main(["mine", "run", str(tmp_path / "mine.yaml"), "--workers", "1"]) == 2  # no silent replacement
    assert _err(capsys) == [f"deepict mine: error: {layout.patches}: already exists (use --overwrite to replace "
                            "the earlier run)"]


def test_invariant_codes_need_no_autoencoder_and_new_tomograms_follow_them(mined, tmp_path, threads, capsys):
    """``encode --codes invariant``: codes without a model; gallery shows typical patches; ``encode --into``
    and ``filter`` cut new patches into the same descriptors with DIR's scaling, compared with DIR's clusters."""
    from deepict_dask.mine.encode import codes_kind, described_patches, invariant_scaling
    from deepict_dask.mine.kmeans import assign, read_centres

    sim, out = mined
    work = tmp_path / "m"
    shutil.copytree(out, work)
    layout = MineLayout.at(work)
    layout.autoencoder.unlink()
    _fails(capsys, ["mine", "encode", str(work), "--codes", "invariant", "--model", "ae.safetensors", "--overwrite"],
           "--model is for autoencoder codes; invariant codes need no model")
    capsys.readouterr()
    _ok("mine", "encode", str(work), "--codes", "invariant", "--invariant-lowpass", "1", "--overwrite", "--workers", "1")
    assert "(invariant)" in capsys.readouterr().out
    assert described_patches(layout.codes)["lowpass_sigma"] == 1.0  # cut again from the tomogram, low-passed
    assert codes_kind(layout.codes) == "invariant" and zarr.open_array(str(layout.codes)).shape[1] > 8
    _ok("mine", "cluster", str(work), "--k", "4", "--overwrite")
    _ok("mine", "gallery", str(work), "--overwrite")
    assert "most typical patch" in layout.gallery.read_text()

    new = sim / "tomograms" / "sim_0001.mrc"
    other = MineLayout.at(tmp_path / "other")
    _ok("mine", "encode", str(work), str(new), "--into", str(other.root), "--grid", "8", "--workers", "1")
    assert codes_kind(other.codes) == "invariant"  # DIR's kind, with DIR's scaling and DIR's low-pass
    assert described_patches(other.codes) == described_patches(layout.codes)
    third = MineLayout.at(tmp_path / "third")  # --codes given: DIR's low-pass still, not the default 0
    _ok("mine", "encode", str(work), str(new), "--into", str(third.root), "--grid", "8", "--codes", "invariant",
        "--no-patches", "--workers", "1")
    np.testing.assert_allclose(zarr.open_array(str(third.codes))[:], zarr.open_array(str(other.codes))[:], atol=1e-5)
    for a, b in zip(invariant_scaling(other.codes), invariant_scaling(layout.codes)):
        np.testing.assert_array_equal(a, b)
    big = _largest_cluster(layout)
    table = tmp_path / "kept.csv"
    _ok("mine", "filter", str(work), str(new), "--select", f"blob={big}", "-o", str(table), "--grid", "8",
        "--workers", "1")
    nearest = assign(zarr.open_array(str(other.codes), mode="r"), read_centres(layout.cluster_centres))
    assert pd.read_csv(table)["patch"].tolist() == np.flatnonzero(nearest == big).tolist()
    capsys.readouterr()
    _fails(capsys, ["mine", "labels", str(work), "--select", f"blob={big}", "-o", str(tmp_path / "weak")],
           f"no autoencoder yet: run `deepict mine train-ae {work}` first")  # weak labels are its reconstructions


def _fails(capsys, argv: list[str], message: str, dask: bool = False) -> None:
    """Exit 2 with one error line; ``dask``: the failure comes from inside the cluster's work, after the
    line naming the dashboard."""
    assert main(argv) == 2
    err = _err(capsys)
    if dask:
        assert err[0].startswith("Dask dashboard: ")
        err = err[1:]
    assert len(err) == 1 and err[0].startswith("deepict mine: error: ") and message in err[0], err


def test_patch_larger_than_the_tomogram_and_no_dog_peaks(mined, tmp_path, capsys, threads):
    sim, _ = mined
    tomo = sim / "tomograms" / "sim_0000.mrc"
    out = tmp_path / "m"
    _fails(capsys, ["mine", "patches", str(tomo), "-o", str(out), "--patch-size", "64"],
           f"{tomo}: patch of [64, 64, 64] voxels (z, y, x) is larger than the tomogram ([48, 64, 64] voxels)")
    flat = tmp_path / "flat.mrc"
    write_mrc(make_volume(np.zeros((32, 32, 32), np.float32), voxel_size=10.0), flat)
    _fails(capsys, ["mine", "patches", str(flat), "-o", str(out), "--patch-size", "16", "--workers", "1"],
           "flat: no Difference-of-Gaussians peaks found", dask=True)
    assert not out.exists() or not any(out.iterdir())


def test_k_larger_than_the_patches_and_missing_steps(mined, tmp_path, capsys):
    _, out = mined
    work = tmp_path / "m"
    shutil.copytree(out, work)
    layout = MineLayout.at(work)
    n = zarr.open_array(str(layout.patches), mode="r").shape[0]
    before = layout.labels.stat().st_mtime_ns
    _fails(capsys, ["mine", "cluster", str(work), "--k", str(n + 1), "--overwrite"],
           f"k = {n + 1} clusters is more than the {n} patches")
    assert layout.labels.stat().st_mtime_ns == before and not list(layout.clusters.glob(".*"))
    codes = zarr.open_array(str(layout.codes), mode="r+")
    codes[:] = np.float32(0.25)  # a collapsed autoencoder: one code for every patch
    for step in (["cluster", "--k", "4", "--overwrite"], ["choose-k", "--ks", "2", "3"]):
        _fails(capsys, ["mine", step[0], str(work), *step[1:]],
               f"{layout.codes}: every patch has the same code: the autoencoder does not tell the patches apart")
    assert layout.labels.stat().st_mtime_ns == before and not layout.choose_k_table.exists()
    shutil.rmtree(layout.codes)
    shutil.rmtree(layout.clusters)
    _fails(capsys, ["mine", "cluster", str(work), "--k", "4"],
           f"no codes yet: run `deepict mine encode {work}` first")
    _fails(capsys, ["mine", "choose-k", str(work)], f"run `deepict mine encode {work}` first")
    _fails(capsys, ["mine", "gallery", str(work)], f"no clusters yet: run `deepict mine cluster {work} --k K` first")
    layout.autoencoder.unlink()
    _fails(capsys, ["mine", "encode", str(work)], f"no autoencoder yet: run `deepict mine train-ae {work}` first")
    empty = tmp_path / "empty"
    _fails(capsys, ["mine", "train-ae", str(empty)], "no patches yet: run `deepict mine patches TOMO... -o")
    assert not layout.codes.exists() and not layout.clusters.exists() and not empty.exists()


def test_bad_selections_write_nothing(mined, tmp_path, capsys):
    _, out = mined
    weak = tmp_path / "weak"
    layout = MineLayout.at(out)
    empty_cluster = [c for c in range(4) if c not in set(np.asarray(zarr.open_array(str(layout.labels))[:]))]
    _fails(capsys, ["mine", "labels", str(out), "--select", "blob=7", "-o", str(weak)],
           "--select: class 'blob': cluster 7 does not exist (k = 4: ids 0..3)")
    _fails(capsys, ["mine", "labels", str(out), "--select", "", "-o", str(weak)], "--select: the selection is empty")
    sel = tmp_path / "sel.yaml"
    sel.write_text("{}\n")
    _fails(capsys, ["mine", "labels", str(out), "--select", str(sel), "-o", str(weak)],
           f"{sel}: the selection is empty")
    sel.write_text("surface: [1]\nglobular: [1]\n")
    _fails(capsys, ["mine", "labels", str(out), "--select", str(sel), "-o", str(weak)],
           "cluster 1 is selected in two classes")
    if empty_cluster:
        _fails(capsys, ["mine", "labels", str(out), "--select", f"a={empty_cluster[0]}", "-o", str(weak)],
               f"cluster {empty_cluster[0]} has no patches")
    _fails(capsys, ["mine", "filter", str(out), str(out / "nowhere.mrc"), "--select", "a=9", "-o",
                    str(tmp_path / "t.csv")], "cluster 9 does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel.yaml"]


def test_models_of_the_wrong_task_are_refused(mined, tmp_path, capsys):
    from tests.helpers import tiny_model

    sim, out = mined
    work = tmp_path / "m"
    shutil.copytree(out, work)
    layout = MineLayout.at(work)
    shutil.rmtree(layout.codes)
    seg = tiny_model(tmp_path / "seg.safetensors", name="seg")
    _fails(capsys, ["mine", "encode", str(work), "--model", str(seg)],
           f"{seg}: model 'seg' is a segmentation model, not an autoencoder")
    assert not layout.codes.exists()
    pred = tmp_path / "pred"
    assert main(["predict", str(sim / "tomograms" / "sim_0001.mrc"), "--model", str(layout.autoencoder),
                 "-o", str(pred), "--no-progress"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "is an autoencoder (task autoencoder), not a segmentation model" in err[0]
    assert not pred.exists()
    config = tmp_path / "run.yaml"
    config.write_text(f"inputs: {{paths: [{sim / 'tomograms' / 'sim_0001.mrc'}]}}\noutput: {{dir: run}}\n"
                      f"models: [{{name: ae, path: {layout.autoencoder}}}]\n"
                      "targets: [{name: blob, model: ae, kind: segmentation}]\n")
    assert main(["run", str(config), "--workers", "1", "--no-progress"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and f"models: ae: {layout.autoencoder}: model 'autoencoder3d' is an autoencoder" in err[0]
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]


def test_init_config_writes_an_example_that_validates(tmp_path, capsys):
    from deepict_dask.mine.config import load_mine_config

    path = tmp_path / "mine.yaml"
    _ok("mine", "init-config", "-o", str(path))
    cfg = load_mine_config(path)
    assert cfg.cluster.k == 100 and cfg.patches.patch_shape == (32, 32, 32)
    assert cfg.out == str(tmp_path / "mine")
    _fails(capsys, ["mine", "init-config", "-o", str(path)], "already exists")


@pytest.mark.parametrize(("argv", "message"), [
    (["cluster", "D", "--k", "1"], "--k (k): Input should be greater than or equal to 2"),
    (["train-ae", "D", "--lr", "0"], "--lr (lr): Input should be greater than 0"),
    (["train-ae", "D", "--centre-sigma", "-1"], "--centre-sigma (centre_sigma): Input should be greater than 0"),
    (["patches", "t.mrc", "-o", "D", "--patch-size", "2"], "--patch-size (patch_shape): patch edges must be >= 4 voxels"),
    (["patches", "t.mrc", "-o", "D", "--patch-size", "8", "8"], "--patch-size: one edge or three (Z Y X), got 2"),
    (["patches", "t.mrc", "-o", "D", "--grid", "0"], "--grid (stride): Input should be greater than or equal to 1"),
    (["choose-k", "D", "--ks", "1", "5"], "--ks (ks): ks must be values >= 2, got [1, 5]"),
    (["encode", "D", "t.mrc"], "encoding new tomograms needs --into DIR2"),
    (["encode", "D", "--no-patches"], "--no-patches needs new tomograms (TOMO...) to encode"),
    (["patches", "t.mrc", "-o", "D", "--dog-k", "1"], "--dog-k (dog_k): Input should be greater than 1"),
    (["patches", "t.mrc", "-o", "D", "--lowpass", "-2"], "--lowpass (lowpass_sigma): Input should be greater than or equal to 0"),
    (["gallery", "D", "--columns", "0"], "--columns (columns): Input should be greater than or equal to 1"),
])
def test_bad_option_values_name_their_flag_before_any_work(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["mine", *argv], message)
    assert not list(tmp_path.iterdir())


def test_flag_defaults_are_the_options_models_defaults():
    """The step flags take type, default and help from the options models: what --help says is what runs."""
    from deepict_dask.cli.main import build_parser
    from deepict_dask.cli.mine import _centres, _encode_opts, _patches_opts
    from deepict_dask.mine.options import CentreOptions, EncodeOptions, PatchOptions

    args = build_parser().parse_args(["mine", "patches", "t.mrc", "-o", "D"])
    assert _centres(args) == CentreOptions() and _patches_opts(args) == PatchOptions()
    args = build_parser().parse_args(["mine", "filter", "D", "t.mrc", "--select", "a=1", "-o", "k.csv"])
    assert _encode_opts(args) == EncodeOptions()
    args = build_parser().parse_args(["mine", "encode", "D", "--device", "cpu"])
    assert args.codes is None  # unset: new tomograms follow DIR's kind of codes
    assert _encode_opts(args) == EncodeOptions(device="cpu")


def test_train_ae_flags_reach_the_objective(mined):
    """``--centre-sigma`` and ``--augment`` reach the training config, recorded in the model file."""
    from deepict_dask.mine import MineLayout
    from deepict_dask.models import read_model_info

    info = read_model_info(MineLayout.at(mined[1]).autoencoder)
    assert info.training["config"]["loss"] == [{"kind": "mse", "weight": 1.0, "alpha": 0.5, "beta": 0.5,
                                                "centre_sigma": 3.0}]
    assert info.training["config"]["augment"]["rotate_180"] is True  # --augment (off by default, as published)
