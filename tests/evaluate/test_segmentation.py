"""Chunked voxel metrics against numpy and histogram AUPRC against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from deepict_dask.cli.main import main
from deepict_dask.errors import InputError
from deepict_dask.evaluate.segmentation import mask_metrics, probability_metrics
from deepict_dask.io.volume import make_volume
from tests.helpers import mrc_file


def test_mask_metrics_match_numpy_per_label():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(32, 40, 36)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 3, size=truth.shape)).astype(np.uint8)
    m = mask_metrics(make_volume(pred, chunks=(16, 16, 16)), make_volume(truth, chunks=(10, 20, 12)))
    for lab in (1, 2):
        tp = int(((pred == lab) & (truth == lab)).sum())
        fp = int(((pred == lab) & (truth != lab)).sum())
        fn = int(((pred != lab) & (truth == lab)).sum())
        got = m["per_class"][str(lab)]
        assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, fn)
        assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert got["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["tp"] == sum(m["per_class"][k]["tp"] for k in ("1", "2"))


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_auprc_from_histograms_equals_sklearn(dtype):
    rng = np.random.default_rng(1)
    truth = (rng.random((24, 30, 28)) < 0.2).astype(np.uint8)
    noisy = np.clip(truth * 0.35 + rng.random(truth.shape) * 0.65, 0, 1)
    if dtype == "uint8":
        stored = np.round(noisy * 255).astype(np.uint8)
        quantized = stored / 255.0
    else:
        stored = noisy.astype(np.float32)
        quantized = np.rint(stored.astype(np.float64) * 1000) / 1000
    m = probability_metrics(make_volume(stored, chunks=(8, 16, 16)), make_volume(truth, chunks=(12, 12, 12)))
    ref = average_precision_score(truth.ravel(), quantized.ravel())
    assert m["auprc"] == pytest.approx(ref, abs=1e-6)
    p, r, t = precision_recall_curve(truth.ravel(), quantized.ravel())
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    assert m["best_f1"] == pytest.approx(f1.max(), abs=1e-9)
    # voxel metrics at the threshold
    called = quantized >= 0.5
    tp = int((called & (truth == 1)).sum())
    assert m["tp"] == tp and m["fp"] == int((called & (truth == 0)).sum())


def test_bad_masks():
    a = make_volume(np.zeros((8, 8, 8), np.uint8))
    b = make_volume(np.zeros((8, 8, 9), np.uint8))
    with pytest.raises(InputError, match="different shapes"):
        mask_metrics(a, b)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        probability_metrics(make_volume(np.full((8, 8, 8), 2.0, np.float32)), a)
    with pytest.raises(InputError, match="voxel sizes"):
        mask_metrics(make_volume(np.zeros((8, 8, 8), np.uint8), voxel_size=10), make_volume(np.zeros((8, 8, 8), np.uint8), voxel_size=5))


def test_cli_masks(tmp_path, capsys):
    rng = np.random.default_rng(2)
    truth = (rng.random((16, 20, 20)) < 0.3).astype(np.int8)
    prob = np.clip(truth * 0.5 + rng.random(truth.shape) * 0.5, 0, 1).astype(np.float32)
    tpath, ppath = str(mrc_file(tmp_path / "t.mrc", truth)), str(mrc_file(tmp_path / "p.mrc", prob))
    out = tmp_path / "m.json"
    assert main(["evaluate", "masks", "--pred", ppath, "--truth", tpath, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"tp", "fp", "fn", "precision", "recall", "f1", "per_class", "auprc"} <= set(data)
    assert main(["evaluate", "masks", "--pred", ppath, "--truth", tpath, "--json", str(out)]) == 2
    assert f"{out}: already exists (use --overwrite" in capsys.readouterr().err
    assert main(["evaluate", "masks", "--pred", ppath, "--truth", tpath, "--json", str(out), "--overwrite"]) == 0
    bad = str(mrc_file(tmp_path / "b.mrc", np.zeros((16, 20, 21), np.int8)))
    assert main(["evaluate", "masks", "--pred", ppath, "--truth", bad]) == 2


def test_map_kind_from_dtype_and_scale_attributes():
    from deepict_dask.evaluate.segmentation import map_kind

    labels = make_volume(np.zeros((4, 4, 4), np.uint8))
    assert map_kind(labels) == "labels"
    assert map_kind(make_volume(np.zeros((4, 4, 4), np.float32))) == "probability"
    scaled = make_volume(np.zeros((4, 4, 4), np.uint8), attrs={"probability_scale": 255})
    assert map_kind(scaled) == "probability"
    assert map_kind(labels, "probability") == "probability"  # an explicit kind wins
