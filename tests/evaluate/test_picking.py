"""Picking metrics against brute-force references, DeePiCt's protocol by hand, bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, InputError
from deepict_dask.evaluate.files import load_table
from deepict_dask.evaluate.matching import REDUNDANT, TP, match_greedy, match_optimal
from deepict_dask.evaluate.picking import evaluate_picks


def brute_force(pred: np.ndarray, truth: np.ndarray, tol: float) -> tuple[int, float]:
    """Exhaustive search: the largest one-to-one matching within tol, then its smallest distance sum."""
    d = np.sqrt(((pred[:, None, :] - truth[None, :, :]) ** 2).sum(-1))
    n, m = d.shape
    best = (0, 0.0)
    for k in range(min(n, m), 0, -1):
        sums = []
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                vals = d[list(rows), list(cols)]
                if np.all(vals <= tol):
                    sums.append(vals.sum())
        if sums:
            return k, float(min(sums))
    return best


def table(xyz: np.ndarray, tomo: str = "t1", cls: str = "ribo", **cols) -> pd.DataFrame:
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    df = pd.DataFrame({"tomo": tomo, "class": cls, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    for c, a in zip(("x_A", "y_A", "z_A"), ("x", "y", "z")):
        df[c] = df[a] * 10.0
    for k, v in cols.items():
        df[k] = v
    return df


@pytest.mark.parametrize("seed", range(25))
def test_optimal_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 6, size=2)
    # integer grid positions make exact ties and distances exactly on the radius
    pred = rng.integers(0, 5, size=(n, 3)).astype(float)
    truth = rng.integers(0, 5, size=(m, 3)).astype(float)
    tol = float(rng.choice([1.0, 2.0, np.sqrt(2.0), 3.0]))
    k, dsum = brute_force(pred, truth, tol)
    res = match_optimal(pred, truth, tol)
    got = res.pred_to_truth >= 0
    assert got.sum() == k
    assert np.nansum(res.pred_dist) == pytest.approx(dsum, abs=1e-9)
    # a real one-to-one matching within the radius
    j = res.pred_to_truth[got]
    assert len(set(j.tolist())) == len(j)
    assert np.all(np.linalg.norm(pred[got] - truth[j], axis=1) <= tol)
    # the sparse solver path agrees
    res2 = match_optimal(pred, truth, tol, dense_limit=0)
    assert (res2.pred_to_truth >= 0).sum() == k
    assert np.nansum(res2.pred_dist) == pytest.approx(dsum, abs=1e-9)
    # multiple hits
    d = np.linalg.norm(pred[:, None] - truth[None], axis=-1)
    np.testing.assert_array_equal(res.truth_hits, (d <= tol).sum(0))


def test_optimal_matches_dense_assignment_on_larger_random_sets():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(7)
    for n, m in [(300, 250), (200, 400)]:
        pred = rng.uniform(0, 60, size=(n, 3))
        truth = rng.uniform(0, 60, size=(m, 3))
        tol = 5.0
        d = np.linalg.norm(pred[:, None] - truth[None], axis=-1)
        big = tol * (min(n, m) + 1) + 1
        cost = np.where(d <= tol, d - big, 0.0)
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < 0
        for limit in (10**9, 0):
            res = match_optimal(pred, truth, tol, dense_limit=limit)
            assert (res.pred_to_truth >= 0).sum() == ok.sum()
            assert np.nansum(res.pred_dist) == pytest.approx(d[r[ok], c[ok]].sum(), rel=1e-9)


def test_counts_and_shrec_numbers_against_reference():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 30, size=(60, 3)).astype(float)
    pred = np.vstack([truth[:40] + rng.integers(-2, 3, size=(40, 3)), rng.integers(0, 30, size=(30, 3))])
    tol = 3.0
    ev = evaluate_picks(table(pred), table(truth), tol)
    k, dsum = brute_force_lsa(pred, truth, tol)
    m = ev.metrics
    assert m["tp"] == k and m["rr"] == 70 and m["fp"] == 70 - k and m["fn"] == 60 - k
    assert m["precision"] == pytest.approx(k / 70) and m["recall"] == pytest.approx(k / 60)
    assert m["f1"] == pytest.approx(2 * k / (70 + 60))
    assert m["ad"] == pytest.approx(dsum / k)
    d = np.linalg.norm(pred[:, None] - truth[None], axis=-1)
    assert m["mh"] == int(((d <= tol).sum(0) > 1).sum())
    assert m["per_class"]["ribo"]["tp"] == k
    assert set(ev.pred["status"]) <= {"TP", "FP"} and (ev.truth["status"] == "TP").sum() == k


def brute_force_lsa(pred, truth, tol):
    from scipy.optimize import linear_sum_assignment

    d = np.linalg.norm(pred[:, None] - truth[None], axis=-1)
    big = tol * (min(d.shape) + 1) + 1
    cost = np.where(d <= tol, d - big, 0.0)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < 0
    return int(ok.sum()), float(d[r[ok], c[ok]].sum())


def test_groups_never_match_across_tomograms_and_classes():
    p = pd.concat([table([[0, 0, 0]], "a", "ribo"), table([[0, 0, 0]], "b", "ribo"), table([[5, 5, 5]], "a", "fas")])
    t = pd.concat([table([[0, 0, 0]], "a", "ribo"), table([[5, 5, 5]], "a", "ribo"), table([[20, 0, 0]], "b", "ribo")])
    t = pd.concat([t, table([[40, 0, 0]], "a", "fas")])
    ev = evaluate_picks(p, t, 2.0)
    m = ev.metrics
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 3)
    assert m["per_class"]["ribo"]["tp"] == 1 and m["per_class"]["fas"]["fp"] == 1
    assert m["per_tomogram"]["b"]["fp"] == 1 and m["per_tomogram"]["b"]["fn"] == 1
    rows = {(r["tomo"], r["class"]): r for r in m["per_tomogram_class"]}
    assert rows[("a", "ribo")]["tp"] == 1 and rows[("a", "ribo")]["fn"] == 1 and rows[("b", "ribo")]["fp"] == 1
    assert rows[("a", "fas")]["fp"] == 1 and rows[("a", "fas")]["fn"] == 1 and len(rows) == 3
    conf = m["confusion"]
    # class-agnostic: the fas prediction at (5,5,5) in tomogram a lands on a ribo truth
    mat = pd.DataFrame(conf["matrix"], index=conf["truth_classes"], columns=conf["pred_classes"])
    assert mat.loc["ribo", "fas"] == 1 and mat.loc["ribo", "ribo"] == 1 and mat.loc["fas", "(missed)"] == 1


def test_deepict_protocol_by_hand():
    truth = np.array([[0, 0, 0], [10, 0, 0], [30, 0, 0]], float)
    pred = np.array(
        [
            [1, 0, 0],  # score .9: nearest truth 0 -> TP
            [0.5, 0, 0],  # score .8: truth 0 already detected, no other within 2 -> redundant
            [50, 0, 0],  # score .7: nothing near -> FP
            [9, 0, 0],  # score .6: truth 1 -> TP
            [10.5, 0, 0],  # score .1: redundant
        ]
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    g = match_greedy(pred, truth, 2.0, np.argsort(-scores))
    assert g.status.tolist() == [TP, REDUNDANT, 0, TP, REDUNDANT]
    ev = evaluate_picks(table(pred, score=scores), table(truth), 2.0, protocol="deepict")
    m = ev.metrics
    assert (m["tp"], m["fp"], m["fn"], m["redundant"], m["rr"]) == (2, 1, 1, 2, 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    # curve points (one per non-empty step): (P,R) = (1,1/3) (1,1/3) (1/2,1/3) (2/3,2/3) (2/3,2/3)
    f1s = [0.5, 0.5, 0.4, 2 / 3, 2 / 3]
    assert m["max_f1"] == pytest.approx(max(f1s))
    assert m["best_score"] == pytest.approx(0.6)
    assert m["auprc"] == pytest.approx(0.5 * (1 / 3) * (0.5 + 2 / 3))
    # nearest undetected truth wins, not the first within the radius
    g2 = match_greedy(np.array([[4.0, 0, 0]]), np.array([[0.0, 0, 0], [5.0, 0, 0]]), 5.0, [0])
    assert g2.pred_to_truth.tolist() == [1]


def test_angstrom_unit_and_bad_inputs():
    truth = table([[0, 0, 0], [10, 0, 0]])
    pred = table([[0.5, 0, 0], [10, 0, 0]])
    assert evaluate_picks(pred, truth, 8.0, unit="A").metrics["tp"] == 2
    assert evaluate_picks(pred, truth, 4.0, unit="A").metrics["tp"] == 1
    with pytest.raises(ConfigError, match="unknown unit"):
        evaluate_picks(pred, truth, 1.0, unit="nm")
    with pytest.raises(InputError, match="no coordinates"):
        evaluate_picks(pred.drop(columns=["x"]), truth, 1.0)
    with pytest.raises(InputError, match="TS_01.mrc"):
        evaluate_picks(table([[0, 0, 0]], "TS_01.mrc"), table([[0, 0, 0]], "TS_01"), 1.0)
    both = pd.concat([pred, table([[0, 0, 0]], "t9")])
    with pytest.raises(InputError, match="'t9'"):
        evaluate_picks(both, truth, 1.0)
    ev = evaluate_picks(both, truth, 1.0, tomograms="common")
    assert ev.metrics["rr"] == 2 and "t9" in ev.metrics["notes"][0]
    with pytest.raises(ConfigError):
        evaluate_picks(pred, truth, -1.0)


def test_cli_picks_json_and_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 50, size=(40, 3))
    pred = truth[:30] + rng.normal(0, 0.5, size=(30, 3))
    tp_path, pp_path = tmp_path / "truth.csv", tmp_path / "pred.csv"
    table(truth).to_csv(tp_path, index=False)
    table(pred, score=rng.uniform(size=30)).to_csv(pp_path, index=False)
    out = tmp_path / "m.json"
    rc = main(["evaluate", "picks", "--pred", str(pp_path), "--truth", str(tp_path), "--tolerance", "3", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("tp", "fp", "fn", "precision", "recall", "f1"):
        assert key in data and key in data["per_class"]["ribo"]
    assert data["tp"] == 30 and data["fn"] == 10
    text = capsys.readouterr().out
    assert "ribo" in text and "30" in text
    rc = main(["evaluate", "picks", "--pred", str(pp_path), "--truth", str(tp_path), "--tolerance", "3", "--unit", "parsec"])
    assert rc == 2
    assert "unknown unit" in capsys.readouterr().err


def test_cli_picks_voxel_tables_need_no_voxel_size(tmp_path, capsys, caplog):
    """Two tables in voxels matched with a voxel tolerance: no --voxel-size needed (issue 17)."""
    pts = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0], [20.0, 5.0, 7.0]])
    for name, off in (("t.csv", 0.0), ("p.csv", 0.5)):
        pd.DataFrame({"tomo": "a", "class": "ribo", "x": pts[:, 0] + off, "y": pts[:, 1], "z": pts[:, 2]}).to_csv(
            tmp_path / name, index=False)
    ev = evaluate_picks(load_table(tmp_path / "p.csv", voxels_only=True), load_table(tmp_path / "t.csv", voxels_only=True),
                        1.0)
    assert ev.metrics["tp"] == 3
    args = ["evaluate", "picks", "--pred", str(tmp_path / "p.csv"), "--truth", str(tmp_path / "t.csv")]
    # an Angstrom tolerance does need the voxel size, and says so
    assert main([*args, "--tolerance", "10", "--unit", "A"]) == 2
    assert "voxel size" in capsys.readouterr().err
    # a table whose x/x_A disagree with the other table's is reported with the factor
    pd.DataFrame({"tomo": "a", "class": "ribo", "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2],
                  "x_A": pts[:, 0] * 10, "y_A": pts[:, 1] * 10, "z_A": pts[:, 2] * 10}).to_csv(tmp_path / "t10.csv", index=False)
    pd.DataFrame({"tomo": "a", "class": "ribo", "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2],
                  "x_A": pts[:, 0], "y_A": pts[:, 1], "z_A": pts[:, 2]}).to_csv(tmp_path / "p1.csv", index=False)
    with caplog.at_level("WARNING"):
        assert main(["evaluate", "picks", "--pred", str(tmp_path / "p1.csv"), "--truth", str(tmp_path / "t10.csv"),
                     "--tolerance", "1"]) == 0
    assert "disagree on the voxel size by 10.0x" in caplog.text
    assert load_table(tmp_path / "t10.csv", voxel_size=10.0)["x_A"].iloc[1] == 100.0
    with pytest.raises(InputError, match="disagree by 10.0x"):
        load_table(tmp_path / "p1.csv", voxel_size=10.0)
