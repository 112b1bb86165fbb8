"""examples/evaluate_mine.py: the issue-20 target measurement runs end to end on a tiny simulation,
and its cluster scores and simulated user compute what they claim."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("evaluate_mine", EXAMPLES / "evaluate_mine.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_mine"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("evaluate_mine", None)


def test_cluster_scores_by_hand(script):
    clusters = np.array([0, 0, 1, 1, 1, 2])
    truth = np.array(["ribosome", "ribosome", "membrane", "membrane", "ribosome", "background"], dtype=object)
    s = script.cluster_scores(clusters, truth, k=4)
    assert s["majority_accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    # ribosome patches sit in cluster 0 (all ribosome) twice and in cluster 1 (1/3 ribosome) once
    assert s["class_purity"]["ribosome"] == pytest.approx((1 + 1 + 1 / 3) / 3, abs=1e-4)
    assert s["class_purity"]["membrane"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["clusters_used"] == 3 and s["class_counts"] == {"background": 1, "membrane": 2, "ribosome": 3}
    # the majority of another set of patches (a user who labelled the clusters on tomogram A)
    other = pd.Series(["membrane", "membrane", "background", ""])
    assert script.cluster_scores(clusters, truth, 4, other)["majority_accuracy"] == pytest.approx(3 / 6, abs=1e-4)
    perfect = script.cluster_scores(np.array([3, 3, 1]), np.array(["a", "a", "b"], dtype=object), 4)
    assert perfect["adjusted_rand_index"] == 1.0 and perfect["majority_accuracy"] == 1.0


def test_simulated_user_selects_pure_clusters_once(script):
    clusters = np.array([0] * 10 + [1] * 10 + [2] * 10)
    truth = np.array(["ribosome"] * 8 + ["background"] * 2 + ["membrane"] * 6 + ["ribosome"] * 4
                     + ["membrane"] * 5 + ["background"] * 5, dtype=object)
    table = script.cluster_table(clusters, truth, 4)
    assert script.select_clusters(table, 0.7) == {"ribosome": [0]}
    # at a low purity cluster 1 qualifies for both classes: it goes to the larger share only
    assert script.select_clusters(table, 0.3) == {"ribosome": [0], "membrane": [1, 2]}


def test_tiny_run_writes_every_figure(script, tmp_path):
    out = tmp_path / "eval"
    res = script.main(["--out", str(out), "--shape", "48", "96", "96", "--k", "5", "--ae-epochs", "1",
                       "--edss-epochs", "1", "--crop", "16", "--threads", "1", "--user-purity", "0.3", "--prefilter", "1",
                       "--no-gallery", "--ae-centre-sigma", "6", "--cnn-reference-epochs", "1"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["figures"] == res["figures"]
    assert set(script.TARGETS) <= set(saved["figures"])
    assert all(0.0 <= v <= 1.0 for v in saved["figures"].values()), saved["figures"]
    assert saved["selection"], "the simulated user selected nothing: the EDSS3D half did not run"
    assert "predict_B_s" in saved["times_s"] and ("ribosome_picking" in saved or "membrane_voxels" in saved)
    assert (out / "prefiltered" / "sim_0301.mrc").is_file()  # patches and prediction ran on the low-passed copies
    assert saved["patches"]["A"] >= 5 and saved["clusters_B"]["patches"] == saved["patches"]["B"]
    assert "| majority_accuracy_B |" in (out / "report.md").read_text()
    assert json.loads((out / "ae_run" / "config.json").read_text())["loss"] == [
        {"kind": "mse", "weight": 1.0, "alpha": 0.5, "beta": 0.5, "centre_sigma": 6.0}]
    ref = saved["references"]
    assert 0 <= ref["knn_codes"] <= 1 and 0 <= ref["knn_patches"] <= 1 and "majority_accuracy" in ref["pca_kmeans"]
    assert 0 <= ref["knn_invariant"] <= 1 and "majority_accuracy" in ref["invariant_kmeans"]
    cnn = ref["supervised_cnn"]
    assert cnn["epochs"] == 1 and cnn["epoch"] == 1 and 0 <= cnn["accuracy_B"] <= 1 and cnn["recall_B"]
    sweep = saved["weak"]["threshold_sweep"]
    assert sweep and all(set(v) == {"0.3", "0.4", "0.5"} for v in sweep.values())


def test_tiny_run_with_invariant_codes_and_another_held_out_tomogram(script, tmp_path):
    """``--codes invariant``: the clusters come from the descriptors (B scaled with A's statistics), the
    autoencoder's codes become the reference, and ``--more-held-out`` scores one more tomogram."""
    import torch
    import zarr

    from deepict_dask.mine.encode import codes_kind, invariant_scaling
    from deepict_dask.models import save_model
    from deepict_dask.models.autoencoder import Autoencoder3D, autoencoder_info

    model = tmp_path / "ae.safetensors"  # --autoencoder: an earlier run's model, no training here
    torch.manual_seed(0)
    save_model(model, Autoencoder3D(patch_shape=(32,) * 3, code_dim=8, filters=2),
               autoencoder_info("ae", patch_shape=(32,) * 3, code_dim=8, filters=2, voxel_size=13.48))
    out = tmp_path / "eval"
    res = script.main(["--out", str(out), "--shape", "48", "96", "96", "--k", "5", "--autoencoder", str(model),
                       "--edss-epochs", "1", "--crop", "16", "--threads", "1", "--user-purity", "0.3",
                       "--no-gallery", "--codes", "invariant", "--more-held-out", "303", "--true-label-reference"])
    assert res["autoencoder"]["reused"] and not (out / "ae_run").exists()
    a, b = (out / "mine_A" / "codes.zarr"), (out / "mine_B" / "codes.zarr")
    assert codes_kind(a) == codes_kind(b) == "invariant"
    for x, y in zip(invariant_scaling(a), invariant_scaling(b)):
        np.testing.assert_array_equal(x, y)
    assert zarr.open_array(str(a)).shape[1] > 32  # descriptors, not the autoencoder's 32 numbers
    ref = res["references"]
    assert 0 <= ref["knn_autoencoder"] <= 1 and "majority_accuracy" in ref["autoencoder_kmeans"]
    more = res["clusters_more_held_out"]["303"]
    assert more["patches"] > 0 and 0 <= more["majority_accuracy"] <= 1
    for wedge in (more["membrane_wedge"], res["membrane_wedge_B"]):
        assert 0 <= wedge["hidden"] <= wedge["membrane_patches"]
    # the reference EDSS3D learnt from the true masks of the same patches, into its own directories
    true_ref = ref["edss3d_true_labels"]
    assert true_ref["steps"] >= 1 and (out / "edss_true_labels_run" / "model.safetensors").is_file()
    assert (out / "predict_true_labels").is_dir() and ("ribosome_picking" in true_ref or "membrane_voxels" in true_ref)
    labels = zarr.open_array(str(out / "true_labels.zarr"), mode="r")
    assert labels.shape == zarr.open_array(str(out / "weak" / "labels.zarr"), mode="r").shape
    assert all(0.0 <= v <= 1.0 for v in res["figures"].values())


def test_membrane_voxels_reads_stored_probabilities(script, tmp_path):
    """A uint8 map stores probability x 255: the threshold applies to the probability, not the byte."""
    from deepict_dask.io import write_mrc, write_ome_zarr
    from deepict_dask.io.volume import make_volume

    prob = np.zeros((2, 8, 8, 8), np.uint8)
    prob[1, 2:4] = 230  # membrane probability 0.9 in two slabs...
    prob[1, 5] = 100  # ...and 0.39 in one, below 0.5
    store = tmp_path / "p.ome.zarr"
    write_ome_zarr(make_volume(prob, 10.0, channels=["ribosome", "membrane"],
                               attrs={"prediction": {"scale": 1 / 255, "activation": "softmax"}}),
                   store, group="predictions/m", levels=1)
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:4] = 1
    truth[6] = 1
    write_mrc(make_volume(truth, 10.0), tmp_path / "mem.mrc")
    m = script.membrane_voxels(store, "predictions/m", {"membrane": tmp_path / "mem.mrc"}, 0.5)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert script.membrane_voxels(store, "predictions/m", {"membrane": tmp_path / "mem.mrc"}, 0.3)["precision"] \
        == pytest.approx(2 / 3, abs=1e-4)




def _membrane_simulation(tmp_path: Path, missing_wedge: bool = True) -> dict[str, Path]:
    """A membrane mask with two slabs, one lying across the beam (normal along z: inside a +-60 degree
    missing wedge about y) and one seen edge-on (normal along x), and the simulation's metadata."""
    from deepict_dask.io import write_mrc
    from deepict_dask.io.volume import make_volume

    mask = np.zeros((48, 48, 48), np.uint8)
    mask[10:12, 4:44, 4:20] = 1  # normal along z
    mask[4:44, 4:44, 34:36] = 1  # normal along x
    write_mrc(make_volume(mask, 10.0), tmp_path / "mem.mrc")
    imaging = {"tilt_min": -60.0, "tilt_max": 60.0, "missing_wedge": missing_wedge, "ctf": True}
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"voxel_size": 10.0, "params": {"imaging_params": imaging}}))
    return {"membrane": tmp_path / "mem.mrc", "meta": meta}


def test_wedge_retained_tells_membranes_the_tilt_range_cannot_show(script, tmp_path):
    paths = _membrane_simulation(tmp_path)
    kept = script.wedge_retained(paths)
    across, edge_on = np.median(kept[10:12, 14:34, 8:16]), np.median(kept[14:34, 14:34, 34:36])
    assert across < script.HIDDEN_BELOW < 0.75 < edge_on, (across, edge_on)
    # patches centred on each slab: only the one across the beam is hidden
    table = pd.DataFrame({"z": [10.5, 24.0, 30.0], "y": [24.0, 24.0, 24.0], "x": [12.0, 34.5, 26.0]})
    truth = np.array(["membrane", "membrane", "background"], dtype=object)
    hidden = script.hidden_membrane_patches(table, truth, paths, 2, kept)
    assert hidden.tolist() == [True, False, False]
    wedge = script.membrane_wedge_purity(np.array([0, 1, 1]), truth, hidden, 2)
    assert wedge["hidden"] == 1 and wedge["hidden_share"] == 0.5
    assert wedge["purity_hidden"] == 1.0 and wedge["purity_visible"] == 0.5 and wedge["purity_all"] == 0.75
    # without a missing wedge every membrane is visible
    assert np.all(script.wedge_retained(_membrane_simulation(tmp_path / "none", False)) == 1)


def test_membrane_voxels_by_wedge_leaves_hidden_membranes_out(script, tmp_path):
    from deepict_dask.io import write_ome_zarr
    from deepict_dask.io.volume import make_volume

    paths = _membrane_simulation(tmp_path)
    kept = script.wedge_retained(paths)
    truth = np.asarray(__import__("mrcfile").read(paths["membrane"])) > 0
    prob = np.zeros((2, 48, 48, 48), np.float32)
    prob[1][truth] = 1.0
    prob[1, 10:12] = 1.0  # the hidden slab is found but spills over its whole plane: false positives near it
    prob[1, 4:44, 4:44, 34:36] = 0.0  # and the visible one is missed
    prob[0] = 1 - prob[1]
    store = tmp_path / "p.ome.zarr"
    write_ome_zarr(make_volume(prob, 10.0, channels=["ribosome", "membrane"]), store, group="predictions/m", levels=1)
    m = script.membrane_voxels(store, "predictions/m", paths, 0.5, kept)
    wedge = m["by_wedge"]
    assert wedge["recall_hidden"] > 0.9 and wedge["recall_visible"] < 0.1 and wedge["f1_visible"] < 0.1
    assert 0 < wedge["hidden_share"] < 1
    assert sum(v["share"] for v in wedge["recall_by_retained_signal"].values()) == pytest.approx(1, abs=1e-3)
