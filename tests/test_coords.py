"""Coordinate tables: schema, exact round trips through every format, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepict_dask.errors import InputError
from deepict_dask.io.coords import (
    ANGSTROM,
    REQUIRED,
    VOXEL,
    empty_table,
    make_table,
    read_table,
    read_tables,
    validate_table,
    write_copick_dir,
    write_table,
)

VS = (13.48, 13.48, 13.48)


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    n = 25
    return make_table(
        "tomo_a",
        rng.choice(["ribosome", "fas"], n),
        zyx=rng.uniform(0, 200, (n, 3)),
        voxel_size=VS,
        score=rng.random(n),
        size=rng.integers(10, 500, n).astype(float),
        label=np.arange(1, n + 1),
        phi=rng.uniform(-180, 180, n),
        theta=rng.uniform(1, 179, n),
        psi=rng.uniform(-180, 180, n),
    )


def _same_coords(a: pd.DataFrame, b: pd.DataFrame) -> None:
    np.testing.assert_array_equal(a[VOXEL + ANGSTROM].to_numpy(), b[VOXEL + ANGSTROM].to_numpy())
    assert list(a["tomo"]) == list(b["tomo"])
    assert list(a["class"]) == list(b["class"])


def _same_angstrom(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """For formats that store Angstrom (copick): Angstrom exact, voxels to the last bits of a division."""
    np.testing.assert_array_equal(a[ANGSTROM].to_numpy(), b[ANGSTROM].to_numpy())
    np.testing.assert_allclose(a[VOXEL].to_numpy(), b[VOXEL].to_numpy(), rtol=1e-14, atol=0)
    assert list(a["class"]) == list(b["class"])


def _same_angles(a: pd.DataFrame, b: pd.DataFrame) -> None:
    from scipy.spatial.transform import Rotation

    ra = Rotation.from_euler("ZXZ", a[["phi", "theta", "psi"]].to_numpy(), degrees=True)
    rb = Rotation.from_euler("ZXZ", b[["phi", "theta", "psi"]].to_numpy(), degrees=True)
    assert np.max((ra.inv() * rb).magnitude()) < 1e-9


def test_make_table_zyx_order_and_angstrom():
    df = make_table("t", "ribosome", zyx=[[1.0, 2.0, 3.0]], voxel_size=(10.0, 20.0, 30.0), origin=(5.0, 0.0, 0.0))
    row = df.iloc[0]
    assert (row.x, row.y, row.z) == (3.0, 2.0, 1.0)
    assert (row.x_A, row.y_A, row.z_A) == (90.0, 40.0, 15.0)
    assert list(df.columns[: len(REQUIRED)]) == REQUIRED


def test_csv_round_trip_exact(table, tmp_path):
    path = write_table(table, tmp_path / "picks.csv")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, validate_table(table), check_dtype=False)


def test_star_round_trip_exact(table, tmp_path):
    path = write_table(table, tmp_path / "picks.star")
    back = read_table(path)  # the pixel size is recorded in the file
    _same_coords(back, table)
    np.testing.assert_array_equal(back["score"], table["score"])
    np.testing.assert_array_equal(back["label"], table["label"])
    _same_angles(back, table)


def test_relion5_centred_coordinates(table, tmp_path):
    shape = (200, 256, 300)
    path = write_table(table, tmp_path / "picks.star", shape=shape)
    import starfile

    star = starfile.read(path)
    # centre is shape / 2 along each axis, coordinates in Angstrom
    expected_x = (table["x"] - shape[2] / 2) * VS[2]
    np.testing.assert_allclose(star["rlnCenteredCoordinateXAngst"], expected_x, rtol=0, atol=1e-9)
    # a file with only centred coordinates reads back to the same voxels
    star = star.drop(columns=["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"])
    starfile.write({"particles": star}, tmp_path / "r5.star", float_format=None)
    back = read_table(tmp_path / "r5.star", voxel_size=VS, shape=shape)
    np.testing.assert_allclose(back[VOXEL].to_numpy(), table[VOXEL].to_numpy(), rtol=0, atol=1e-9)
    with pytest.raises(InputError, match="shape"):
        read_table(tmp_path / "r5.star", voxel_size=VS)


def test_copick_json_round_trip_exact(table, tmp_path):
    one = table[table["class"] == "ribosome"].reset_index(drop=True)
    path = write_table(one, tmp_path / "ribosome.json")
    doc = json.loads(path.read_text())
    assert doc["unit"] == "angstrom" and doc["pickable_object_name"] == "ribosome"
    assert doc["points"][0]["location"]["x"] == one["x_A"][0]
    back = read_table(path)
    _same_angstrom(back, one)
    np.testing.assert_array_equal(back["score"], one["score"])


def test_copick_needs_one_class_per_file(table, tmp_path):
    with pytest.raises(InputError, match="one class"):
        write_table(table, tmp_path / "both.json")
    assert not (tmp_path / "both.json").exists()
    files = write_copick_dir(table, tmp_path / "overlay")
    assert sorted(f.name for f in files) == ["deepict_0_fas.json", "deepict_0_ribosome.json"]
    back = read_tables(files).sort_values("label").reset_index(drop=True)
    _same_angstrom(back, table.sort_values("label").reset_index(drop=True))


def test_portal_ndjson_round_trip_exact(table, tmp_path):
    path = write_table(table, tmp_path / "points.ndjson")
    first = json.loads(path.read_text().splitlines()[0])
    assert first["type"] == "orientedPoint" and first["location"]["x"] == table["x"][0]
    back = read_table(path, voxel_size=VS, tomo="tomo_a")
    _same_coords(back, table)
    _same_angles(back, table)
    with pytest.raises(InputError, match="voxel size"):
        read_table(path)


def test_motl_round_trip_exact(table, tmp_path):
    ids = {"fas": 2, "ribosome": 1}
    path = write_table(table, tmp_path / "motl_25.csv", fmt="motl", class_ids=ids)
    rows = path.read_text().splitlines()
    assert len(rows) == 25 and all(len(r.split(",")) == 20 for r in rows)
    back = read_table(path, voxel_size=VS, tomo="tomo_a", class_names={v: k for k, v in ids.items()})
    _same_coords(back, table)
    np.testing.assert_array_equal(back["score"], table["score"])
    np.testing.assert_array_equal(back[["phi", "theta", "psi"]], table[["phi", "theta", "psi"]])


def test_motl_column_layout(tmp_path):
    """DeePiCt's layout: score in column 1, x y z (0-based voxels) in columns 8-10, class in 20."""
    line = "0.9,12,34,1,0,0,0,12,34,56,0,0,0,0,0,0,0,0,0,3\n"
    (tmp_path / "motl.csv").write_text(line)
    df = read_table(tmp_path / "motl.csv", voxel_size=10.0)
    row = df.iloc[0]
    assert (row.x, row.y, row.z, row.score, row["class"]) == (12.0, 34.0, 56.0, 0.9, "3")
    assert row.z_A == 560.0


def test_empty_table_round_trip(tmp_path):
    path = write_table(empty_table(["score"]), tmp_path / "none.csv")
    back = read_table(path)
    assert len(back) == 0 and list(back.columns) == REQUIRED + ["score"]


def test_csv_with_voxels_only_needs_voxel_size(tmp_path):
    (tmp_path / "v.csv").write_text("tomo,class,x,y,z\nt,ribosome,1,2,3\n")
    with pytest.raises(InputError, match="voxel size"):
        read_table(tmp_path / "v.csv")
    df = read_table(tmp_path / "v.csv", voxel_size=2.0)
    assert df.loc[0, "z_A"] == 6.0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cols.csv", "foo,bar\n1,2\n", "unknown table columns"),
        ("nocoords.star", "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnClassName #2\nt\tr\n", "no coordinates"),
        ("notjson.json", "{not json", "cannot read"),
        ("nopoints.json", '{"foo": 1}', "points"),
        ("bad.ndjson", '{"location": {"x": 1}}\n', "line 1"),
        ("text.csv", "tomo,class,x,y,z,x_A,y_A,z_A\nt,r,a,b,c,1,2,3\n", "not numbers"),
        ("nan.csv", "tomo,class,x,y,z,x_A,y_A,z_A\nt,r,nan,1,1,1,1,1\n", "NaN"),
    ],
)
def test_bad_tables_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_table(path, voxel_size=1.0)
    assert str(path) in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(InputError, match="suffix"):
        read_table(tmp_path / "x.xlsx")
    with pytest.raises(InputError, match="suffix"):
        write_table(empty_table(), tmp_path / "y.xlsx")


def test_write_is_atomic_on_failure(table, tmp_path):
    target = tmp_path / "picks.csv"
    write_table(table, target)
    before = target.read_bytes()
    bad = table.drop(columns=["x"])
    with pytest.raises(InputError):
        write_table(bad, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["picks.csv"]
