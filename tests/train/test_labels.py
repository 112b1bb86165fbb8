"""`deepict labels`: spheres / oriented templates painted lazily, overlap rule, masks, CLI outputs."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError
from deepict_dask.io.volume import make_volume
from deepict_dask.train.labels import Template, paint_labels, parse_radius
from tests.helpers import mrc_file


def _table(rows):
    return pd.DataFrame(rows, columns=["class", "z", "y", "x", "phi", "theta", "psi"])


def test_parse_radius():
    assert parse_radius("ribosome=120A", 12.0) == ("ribosome", pytest.approx(10.0))
    assert parse_radius("fas=8", 12.0) == ("fas", 8.0)
    assert parse_radius("fas=8vx", 12.0) == ("fas", 8.0)
    for bad in ("ribosome", "x=-3", "x=3km"):
        with pytest.raises(ConfigError):
            parse_radius(bad, 1.0)


def test_spheres_chunk_independent_and_overlap_rule():
    t = _table([["a", 10, 10, 10, 0, 0, 0], ["b", 10, 10, 17, 0, 0, 0], ["a", 28, 28, 28, 0, 0, 0]])
    radii = {"a": 5.0, "b": 3.0}
    whole, ids = paint_labels(t, (32, 32, 32), 1.0, radii, chunks=32)
    parts, _ = paint_labels(t, (32, 32, 32), 1.0, radii, chunks=(7, 9, 11))
    a, b = whole.compute(), parts.compute()
    assert ids == {"a": 1, "b": 2} and a.dtype == np.uint8
    assert np.array_equal(a, b)
    # the sphere cut by the volume border is painted partially; a full sphere has ~4/3 pi r^3 voxels
    z, y, x = np.indices(a.shape)
    assert np.count_nonzero((a == 1) & (z < 20)) == pytest.approx(4 / 3 * np.pi * 125, rel=0.1)
    # overlap: distance/radius decides; at x=14 a is 4/5 = 0.8, b is 3/3 = 1.0 -> a; at x=15: 1.0 vs 0.67 -> b
    assert a[10, 10, 14] == 1 and a[10, 10, 15] == 2
    # order of the table does not matter
    rev, _ = paint_labels(t.iloc[::-1], (32, 32, 32), 1.0, radii, chunks=16)
    assert np.array_equal(rev.compute(), a)
    with pytest.raises(ConfigError, match="have no radius"):
        paint_labels(t, (32, 32, 32), 1.0, {"a": 5.0})


def test_template_orientation_and_masks():
    rod = np.zeros((5, 5, 11), bool)  # along x in the template frame
    rod[1:4, 1:4, :] = True
    tmpl = Template(rod, 1.0)
    t = _table([["a", 16, 16, 16, 0, 0, 0], ["a", 16, 16, 16, 90, 0, 0]])
    flat, _ = paint_labels(t.iloc[:1], (32, 32, 32), 1.0, {"a": 1.0}, template=tmpl, chunks=8)
    turned, _ = paint_labels(t.iloc[1:], (32, 32, 32), 1.0, {"a": 1.0}, template=tmpl, chunks=8)
    f, r = flat.compute(), turned.compute()
    assert np.ptp(np.nonzero(f)[2]) == 10 and np.ptp(np.nonzero(f)[1]) == 2  # long along x
    assert np.ptp(np.nonzero(r)[1]) == 10 and np.ptp(np.nonzero(r)[2]) == 2  # phi=90: long along y
    mem = np.zeros((32, 32, 32), np.uint8)
    mem[:, :, 0:3] = 1
    mem[16, 16, 16] = 1
    out, ids = paint_labels(t.iloc[:1], (32, 32, 32), 1.0, {"a": 1.0}, template=tmpl,
                            masks={"membrane": make_volume(mem)}, chunks=16)
    o = out.compute()
    assert ids == {"a": 1, "membrane": 2}
    assert (o[:, :, 0] == 2).all() and o[16, 16, 16] == 1  # particles painted over masks


def test_labels_cli(tmp_path, capsys):
    tomo = str(mrc_file(tmp_path / "tomo.mrc", np.zeros((24, 32, 32), np.float32)))
    mem = np.zeros((24, 32, 32), np.uint8)
    mem[0] = 1
    mask = str(mrc_file(tmp_path / "mem.mrc", mem))
    table = tmp_path / "picks.csv"
    pd.DataFrame({"tomo": ["tomo", "tomo", "other"], "class": ["ribosome", "fas", "ribosome"],
                  "x": [8.0, 20, 5], "y": [8.0, 20, 5], "z": [8.0, 12, 5]}).to_csv(table, index=False)
    out = tmp_path / "lab.mrc"
    args = ["labels", "--coords", str(table), "--like", tomo, "--radius", "ribosome=40A", "fas=3",
            "--mask", f"membrane={mask}", "--out", str(out)]
    assert main(args) == 0
    lab = mrcfile.read(str(out))
    ids = json.loads((tmp_path / "lab.mrc.json").read_text())["class_ids"]
    assert ids == {"ribosome": 1, "fas": 2, "membrane": 3}
    assert lab[8, 8, 8] == 1 and lab[12, 20, 20] == 2 and lab[5, 5, 5] == 0  # 'other' tomogram excluded
    assert (lab[0][lab[0] != 1] == 3).all()
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    zarr_out = tmp_path / "lab.zarr"
    assert main(args[:-1] + [str(zarr_out)]) == 0
    from deepict_dask.io import open_volume
    from deepict_dask.train.data import class_ids_of

    vol = open_volume(zarr_out)
    assert class_ids_of(zarr_out, vol) == ids
    assert np.array_equal(np.asarray(vol.data), lab)
    assert main(["labels", "--like", tomo, "--coords", str(table), "--radius", "ribosome=4", "--out",
                 str(tmp_path / "x.mrc")]) == 2  # fas has no radius
    assert main(["labels", "--like", str(tmp_path / "missing.mrc"), "--radius", "a=3", "--out",
                 str(tmp_path / "y.mrc")]) == 2


def test_label_tables_are_checked_against_the_volume(tmp_path, caplog):
    """Angstrom in the voxel columns is refused; particles outside are skipped and counted."""
    from deepict_dask.errors import InputError
    from deepict_dask.io.coords import read_tables
    from deepict_dask.io.table_checks import check_table

    shape, vs = (24, 32, 32), (10.0, 10.0, 10.0)
    vox = np.array([[8.0, 8.0, 8.0], [20.0, 20.0, 12.0], [300.0, 5.0, 5.0]])
    base = {"tomo": "tomo", "class": "ribosome"}
    wrong = tmp_path / "wrong.csv"  # x, y, z hold Angstrom (10 A voxels): all outside, and disagreeing
    pd.DataFrame({**base, "x": vox[:, 0] * 10, "y": vox[:, 1] * 10, "z": vox[:, 2] * 10,
                  "x_A": vox[:, 0] * 10, "y_A": vox[:, 1] * 10, "z_A": vox[:, 2] * 10}).to_csv(wrong, index=False)
    with pytest.raises(InputError, match="disagree by 10.0x"):
        check_table(read_tables([wrong], voxel_size=vs, shape=shape), voxel_size=vs, shape=shape, path=wrong,
                    require_inside=True)
    only_voxels = pd.DataFrame({**base, "x": vox[:, 0] * 10, "y": vox[:, 1] * 10, "z": vox[:, 2] * 10})
    with pytest.raises(InputError, match="none of the particles is inside"):  # nothing to compare, none inside
        check_table(only_voxels, voxel_size=vs, shape=shape, require_inside=True)
    good = pd.DataFrame({**base, "x": vox[:, 0], "y": vox[:, 1], "z": vox[:, 2]})
    with caplog.at_level("WARNING"):
        inside = check_table(good, voxel_size=vs, shape=shape, require_inside=True)
    assert list(inside) == [True, True, False] and "1 of 3 particles lie outside" in caplog.text


def test_labels_cli_refuses_angstrom_voxel_columns_and_counts_skipped(tmp_path, capsys):
    """The CLI's own job: one error line and no output file; the count of skipped particles printed."""
    tomo = str(mrc_file(tmp_path / "tomo.mrc", np.zeros((24, 32, 32), np.float32)))
    vox = np.array([[8.0, 8.0, 8.0], [20.0, 20.0, 12.0], [300.0, 5.0, 5.0]])
    base = {"tomo": "tomo", "class": "ribosome"}
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({**base, "x": vox[:, 0] * 10, "y": vox[:, 1] * 10, "z": vox[:, 2] * 10,
                  "x_A": vox[:, 0] * 10, "y_A": vox[:, 1] * 10, "z_A": vox[:, 2] * 10}).to_csv(wrong, index=False)
    args = ["--like", tomo, "--radius", "ribosome=3", "--out"]
    assert main(["labels", "--coords", str(wrong), *args, str(tmp_path / "a.mrc")]) == 2
    err = capsys.readouterr().err
    assert "disagree by 10.0x" in err and "Traceback" not in err and not (tmp_path / "a.mrc").exists()
    good = tmp_path / "good.csv"
    pd.DataFrame({**base, "x": vox[:, 0], "y": vox[:, 1], "z": vox[:, 2]}).to_csv(good, index=False)
    assert main(["labels", "--coords", str(good), *args, str(tmp_path / "c.mrc")]) == 0
    out = capsys.readouterr().out
    assert "painted 2 particles inside the volume" in out and "skipped 1 outside" in out
    assert mrcfile.read(str(tmp_path / "c.mrc"))[8, 8, 8] == 1


def test_particles_inside_selects_the_tomogram_and_counts_the_skipped(tmp_path):
    from deepict_dask.io import open_volume
    from deepict_dask.train.labels import particles_inside

    like = open_volume(mrc_file(tmp_path / "tomo.mrc", np.zeros((24, 32, 32), np.float32)))
    rows = {"tomo": ["tomo", "tomo", "tomo", "other"], "class": "ribosome",
            "x": [8.0, 20.0, 300.0, 4.0], "y": [8.0, 20.0, 5.0, 4.0], "z": [8.0, 12.0, 5.0, 4.0]}
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    table, skipped = particles_inside([str(tmp_path / "t.csv")], like, like_name="tomo")  # several tomograms
    assert table["x"].tolist() == [8.0, 20.0] and skipped == 1
    table, skipped = particles_inside([str(tmp_path / "t.csv")], like, tomo="other")
    assert table["x"].tolist() == [4.0] and skipped == 0
    with pytest.raises(ConfigError, match="no particles of tomogram 'gone'"):
        particles_inside([str(tmp_path / "t.csv")], like, tomo="gone")


def test_write_label_volume_keeps_the_class_ids(tmp_path):
    from deepict_dask.io import open_volume
    from deepict_dask.train.labels import write_label_volume

    vol = make_volume(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) % 3, voxel_size=10.0)
    ids = {"ribosome": 1, "membrane": 2}
    mrc = write_label_volume(vol, tmp_path / "l.mrc", ids)
    assert json.loads((tmp_path / "l.mrc.json").read_text()) == {"class_ids": ids}
    np.testing.assert_array_equal(mrcfile.read(str(mrc)), vol.values)
    zarr = write_label_volume(vol, tmp_path / "l.zarr", ids, chunks=2)
    back = open_volume(zarr)
    assert back.attrs["class_ids"] == ids
    np.testing.assert_array_equal(back.values, vol.values)
