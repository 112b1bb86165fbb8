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


# ---------------------------------------------------------------- issue 17: conventions, RELION 5, Dynamo, checks

V10 = 10.0


def _one_oriented(tomo="TS1", cls="fas", angles=(30.0, 50.0, -70.0), n=1):
    return make_table(tomo, cls, xyz=np.tile([[4.0, 5.0, 6.0]], (n, 1)), voxel_size=V10,
                      phi=angles[0], theta=angles[1], psi=angles[2], score=0.5)


def test_star_and_copick_angles_follow_their_conventions(tmp_path):
    """STAR holds RELION angles whose ZYZ matrix is the inverse of R; copick holds R itself."""
    import starfile
    from scipy.spatial.transform import Rotation

    df = _one_oriented()
    r = Rotation.from_euler("ZXZ", [30.0, 50.0, -70.0], degrees=True)
    star = starfile.read(write_table(df, tmp_path / "p.star", voxel_size=V10))
    relion = Rotation.from_euler("ZYZ", star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()[0], degrees=True)
    assert (relion * r).magnitude() < 1e-9  # relion == R^-1
    doc = json.loads(write_table(df, tmp_path / "p.json", voxel_size=V10).read_text())
    np.testing.assert_allclose(np.asarray(doc["points"][0]["transformation_"])[:3, :3], r.as_matrix(), atol=1e-12)
    for path in (tmp_path / "p.star", tmp_path / "p.json"):
        back = read_table(path)
        got = Rotation.from_euler("ZXZ", back[["phi", "theta", "psi"]].to_numpy()[0], degrees=True)
        assert (got * r.inv()).magnitude() < 1e-9, path


def test_star_tilt_series_pixel_size_and_centred_columns_per_tomogram(tmp_path, caplog):
    import starfile

    df = pd.concat([_one_oriented("TS1"), _one_oriented("TS2")], ignore_index=True)
    shapes = {"TS1": (10, 20, 30), "TS2": (40, 50, 60)}
    star = starfile.read(write_table(df, tmp_path / "a.star", voxel_size=V10, shapes=shapes, tilt_series_pixel_size=2.5))
    assert (star["rlnTomoTiltSeriesPixelSize"] == 2.5).all() and (star["rlnDeepictVoxelSize"] == V10).all()
    np.testing.assert_allclose(star["rlnCenteredCoordinateXAngst"], [(4 - 15) * V10, (4 - 30) * V10])
    np.testing.assert_allclose(star["rlnCenteredCoordinateZAngst"], [(6 - 5) * V10, (6 - 20) * V10])
    assert read_table(tmp_path / "a.star")["x_A"].tolist() == [40.0, 40.0]  # our voxel size, not 2.5
    import deepict_dask.io.coords as coords

    coords._ASSUMED_TS_PIXEL.clear()
    with caplog.at_level("WARNING"):
        path = write_table(df, tmp_path / "b.star", voxel_size=V10)
    assert "assumed equal to the tomogram voxel size" in caplog.text
    assert path.read_text().startswith("# rlnTomoTiltSeriesPixelSize assumed")
    assert starfile.read(path)["rlnTomoTiltSeriesPixelSize"].tolist() == [V10, V10]


def test_dynamo_tbl_round_trip_and_column_map(tmp_path):
    from scipy.spatial.transform import Rotation

    df = pd.concat([_one_oriented("7", "ribosome", (10.0, 20.0, 30.0)), _one_oriented("9", "fas", (-40.0, 100.0, 5.0))],
                   ignore_index=True)
    path = write_table(df, tmp_path / "p.tbl", class_ids={"ribosome": 1, "fas": 2})
    rows = np.loadtxt(path)
    assert rows.shape == (2, 35)
    assert rows[:, 0].tolist() == [1, 2] and rows[:, 19].tolist() == [7, 9] and rows[:, 21].tolist() == [1, 2]
    np.testing.assert_allclose(rows[0, 23:26], [5.0, 6.0, 7.0])  # 1-based pixels
    np.testing.assert_allclose(rows[:, 9], [0.5, 0.5])
    dyn = Rotation.from_euler("ZXZ", rows[0, 6:9], degrees=True)
    assert (dyn * Rotation.from_euler("ZXZ", [10, 20, 30], degrees=True)).magnitude() < 1e-9  # inverse of R
    back = read_table(path, voxel_size=V10, class_names={1: "ribosome", 2: "fas"})
    _same_coords(back, df)
    assert back["class"].tolist() == ["ribosome", "fas"] and back["tomo"].tolist() == ["7", "9"]
    for i in range(2):
        a = Rotation.from_euler("ZXZ", back[["phi", "theta", "psi"]].to_numpy()[i], degrees=True)
        b = Rotation.from_euler("ZXZ", df[["phi", "theta", "psi"]].to_numpy()[i], degrees=True)
        assert (a * b.inv()).magnitude() < 1e-9
    # shifts dx dy dz add to the position; a short file is refused with the column count
    rows[0, 3:6] = [1.0, 2.0, 3.0]
    np.savetxt(tmp_path / "s.tbl", rows)
    np.testing.assert_allclose(read_table(tmp_path / "s.tbl", voxel_size=V10)[["x", "y", "z"]].to_numpy()[0], [5, 7, 9])
    np.savetxt(tmp_path / "short.tbl", rows[:, :20])
    with pytest.raises(InputError, match="at least 26 columns"):
        read_table(tmp_path / "short.tbl", voxel_size=V10)
    (tmp_path / "text.tbl").write_text("1 2 x\n")
    with pytest.raises(InputError, match="holds only numbers, 26 columns at least"):
        read_table(tmp_path / "text.tbl", voxel_size=V10)
    with pytest.raises(InputError, match="voxel size"):
        read_table(path)


def test_coordinate_checks_give_numbers(caplog):
    from deepict_dask.io.table_checks import check_table

    df = make_table("t", "a", xyz=[[1.0, 2.0, 3.0], [50.0, 60.0, 70.0], [5.0, 5.0, 5.0]], voxel_size=10.0)
    angstrom_in_voxels = df.assign(x=df["x_A"], y=df["y_A"], z=df["z_A"])
    with pytest.raises(InputError, match=r"disagree by 10\.0x.*voxel columns in Angstrom"):
        check_table(angstrom_in_voxels, voxel_size=10.0)
    with caplog.at_level("WARNING"):
        inside = check_table(df, voxel_size=10.0, shape=(20, 20, 20))
    assert inside.tolist() == [True, False, True]
    assert "1 of 3 particles lie outside" in caplog.text and "(50.0, 60.0, 70.0)" in caplog.text
    with pytest.raises(InputError, match="none of the particles"):
        check_table(df, shape=(2, 2, 2), require_inside=True)


def test_voxel_table_without_voxel_size_reads_for_voxel_use(tmp_path):
    pd.DataFrame({"tomo": ["t"], "class": ["a"], "x": [1.0], "y": [2.0], "z": [3.0]}).to_csv(tmp_path / "v.csv", index=False)
    with pytest.raises(InputError, match="voxel size"):
        read_table(tmp_path / "v.csv")
    back = read_table(tmp_path / "v.csv", angstrom_optional=True)
    assert back[["x", "y", "z"]].to_numpy().tolist() == [[1.0, 2.0, 3.0]] and back["x_A"].isna().all()


def test_table_cli_copick_star_and_dynamo(tmp_path, capsys, caplog):
    import starfile

    from deepict_dask.cli.main import main

    df = pd.concat([_one_oriented("TS1", "fas"), _one_oriented("TS1", "ribosome"), _one_oriented("TS2", "fas")],
                   ignore_index=True)
    from deepict_dask.io.coords import with_angstrom

    df = with_angstrom(df.assign(x=[1.0, 2.0, 3.0], y=[3.0, 5.0, 4.0], z=[2.0, 1.0, 0.0]), V10)
    src = write_table(df, tmp_path / "in.csv")
    # a multi-class table cannot be one copick file: one line naming the output, nothing written
    assert main(["table", str(src), "--out", str(tmp_path / "one.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one.json:" in err and ".tmp-" not in err and "write_copick_dir" not in err
    assert not list(tmp_path.glob("*one.json*"))
    assert main(["table", str(src), "--out", str(tmp_path / "proj"), "--format", "copick"]) == 0
    assert len(list((tmp_path / "proj/ExperimentRuns").glob("*/Picks/*.json"))) == 3
    with caplog.at_level("WARNING"):
        assert main(["table", str(tmp_path / "proj"), "--out", str(tmp_path / "a.star"),
                     "--tilt-series-pixel-size", "1.35"]) == 0
    assert "no --shape" in caplog.text and "rlnCenteredCoordinate" in caplog.text
    assert starfile.read(tmp_path / "a.star")["rlnTomoTiltSeriesPixelSize"].tolist() == [1.35] * 3
    assert main(["table", str(src), "--out", str(tmp_path / "b.star"), "--shape", "10", "10", "10"]) == 0
    assert "rlnCenteredCoordinateXAngst" in starfile.read(tmp_path / "b.star").columns
    assert main(["table", str(src), "--out", str(tmp_path / "c.tbl")]) == 0
    back = read_table(tmp_path / "c.tbl", voxel_size=V10)
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy())
