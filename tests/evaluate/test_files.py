"""Reading evaluation inputs: stacked tables, unit agreement between the two sides, prediction maps."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from deepict_dask.errors import InputError
from deepict_dask.evaluate.files import check_same_units, load_tables, open_prediction
from tests.helpers import mrc_file


def _table(path, tomo, xs, voxel=10.0, angstrom=True):
    df = pd.DataFrame({"tomo": tomo, "class": "ribo", "x": xs, "y": [5.0] * len(xs), "z": [3.0] * len(xs)})
    if angstrom:
        for a in "xyz":
            df[f"{a}_A"] = df[a] * voxel
    df.to_csv(path, index=False)
    return path


def test_load_tables_stacks_and_voxel_tables_need_no_voxel_size(tmp_path):
    a = _table(tmp_path / "a.csv", "t1", [1.0, 2.0])
    b = _table(tmp_path / "b.csv", "t2", [4.0], angstrom=False)
    both = load_tables([a, b], unit="vox")
    assert list(both["tomo"]) == ["t1", "t1", "t2"] and both["x"].tolist() == [1.0, 2.0, 4.0]
    assert np.isnan(both["x_A"].iloc[2])  # voxel-only table: empty Angstrom columns
    one = load_tables([a], voxel_size=10.0, unit="A")
    assert one["x_A"].tolist() == [10.0, 20.0]


def test_check_same_units_warns_with_the_numbers(tmp_path, caplog):
    pred = load_tables([_table(tmp_path / "p.csv", "t1", [1.0, 2.0], voxel=10.0)])
    same = load_tables([_table(tmp_path / "s.csv", "t1", [1.0, 3.0], voxel=10.1)])
    off = load_tables([_table(tmp_path / "t.csv", "t1", [1.0, 3.0], voxel=1.0)])
    with caplog.at_level(logging.WARNING):
        assert check_same_units(pred, same, ["p.csv"], ["s.csv"]) == pytest.approx(1.01)
        assert not caplog.records
        assert check_same_units(pred, off, ["p.csv"], ["t.csv"]) == pytest.approx(10.0)
        assert check_same_units(pred, pred.iloc[:1], ["p.csv"], ["p.csv"]) is None  # one row cannot say
    assert "disagree on the voxel size by 10.0x (x_A/x implies 10 A in p.csv, 1 A in t.csv)" in caplog.text


def test_open_prediction_names_a_missing_file(tmp_path):
    mrc_file(tmp_path / "m.mrc", np.full((4, 5, 6), 0.5, np.float32), 10.0)
    assert open_prediction(tmp_path / "m.mrc").shape[-3:] == (4, 5, 6)
    with pytest.raises(InputError, match="no such file or directory") as info:
        open_prediction(tmp_path / "nope.zarr")
    assert "nope.zarr" in str(info.value)
