"""copick projects: the file layout we write, and (where copick is installed) copick itself reading it.

copick 1.17 needs zarr<3, so it lives in its own interpreter: ``DEEPICT_COPICK_PYTHON`` names it
(``.ci/run`` builds one); the checks run there by subprocess and report JSON back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from deepict_dask.errors import InputError
from deepict_dask.io.coords import make_table, read_table, write_copick_dir, write_table

VS = 10.0
SHAPES = {"TS1": (20, 30, 40), "TS2": (16, 32, 24)}  # z, y, x


@pytest.fixture
def oriented() -> pd.DataFrame:
    """Two runs, two classes, random orientations (not a symmetric case)."""
    rng = np.random.default_rng(7)
    frames = []
    for tomo, cls, n in (("TS1", "ribosome", 4), ("TS1", "fas", 3), ("TS2", "ribosome", 2)):
        shape = np.array(SHAPES[tomo])
        zyx = rng.uniform(1, shape - 2, size=(n, 3))
        eul = Rotation.random(n, random_state=rng).as_euler("ZXZ", degrees=True)
        frames.append(make_table(tomo, cls, zyx=zyx, voxel_size=VS, score=rng.uniform(0, 1, n),
                                 phi=eul[:, 0], theta=eul[:, 1], psi=eul[:, 2]))
    return pd.concat(frames, ignore_index=True)


def _rot(df: pd.DataFrame) -> Rotation:
    return Rotation.from_euler("ZXZ", df[["phi", "theta", "psi"]].to_numpy(), degrees=True)


def _key(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["tomo", "class", "x"]).reset_index(drop=True)


def test_copick_project_layout(oriented, tmp_path):
    root = tmp_path / "proj"
    files = write_copick_dir(oriented, root)
    rel = sorted(str(f.relative_to(root)) for f in files)
    assert rel == ["ExperimentRuns/TS1/Picks/deepict_0_fas.json", "ExperimentRuns/TS1/Picks/deepict_0_ribosome.json",
                   "ExperimentRuns/TS2/Picks/deepict_0_ribosome.json"]
    config = json.loads((root / "copick_config.json").read_text())
    assert config["config_type"] == "filesystem"
    assert Path(config["overlay_root"].removeprefix("local://")) == root.resolve()
    assert sorted(o["name"] for o in config["pickable_objects"]) == ["fas", "ribosome"]
    assert len({o["label"] for o in config["pickable_objects"]}) == 2
    doc = json.loads((root / "ExperimentRuns/TS1/Picks/deepict_0_fas.json").read_text())
    assert doc["run_name"] == "TS1" and doc["pickable_object_name"] == "fas" and len(doc["points"]) == 3
    # the project reads back whole, orientations included
    back = _key(read_table(root))
    want = _key(oriented)
    np.testing.assert_allclose(back[["x_A", "y_A", "z_A"]], want[["x_A", "y_A", "z_A"]], rtol=0, atol=1e-9)
    assert (_rot(back) * _rot(want).inv()).magnitude().max() < 1e-9


def test_copick_names_copick_cannot_split_are_refused(oriented, tmp_path):
    bad = oriented.assign(**{"class": "large_ribosome"})
    with pytest.raises(InputError, match="'_'"):
        write_copick_dir(bad, tmp_path / "proj")
    assert not (tmp_path / "proj").exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"pickable_objects": {"a": 1}}'])
def test_unusable_copick_config_is_one_error_before_any_pick_is_written(oriented, tmp_path, text):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "copick_config.json").write_text(text)
    with pytest.raises(InputError, match="existing copick config"):
        write_copick_dir(oriented, root)
    assert not (root / "ExperimentRuns").exists()


def test_copick_json_reads_orientation_and_translation(tmp_path):
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("ZXZ", [30, 40, 50], degrees=True).as_matrix()
    m[:3, 3] = [5.0, -5.0, 10.0]
    doc = {"pickable_object_name": "fas", "user_id": "u", "session_id": "1", "run_name": "TS1", "voxel_spacing": VS,
           "points": [{"location": {"x": 100.0, "y": 200.0, "z": 300.0}, "transformation_": m.tolist()}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    back = read_table(tmp_path / "p.json")
    np.testing.assert_allclose(back[["x_A", "y_A", "z_A"]].to_numpy()[0], [105.0, 195.0, 310.0])
    np.testing.assert_allclose(back[["phi", "theta", "psi"]].to_numpy()[0], [30, 40, 50], atol=1e-9)


def _copick_python() -> str | None:
    env = os.environ.get("DEEPICT_COPICK_PYTHON")
    if env:
        return env
    return sys.executable if importlib.util.find_spec("copick") is not None else None


_COPICK_SCRIPT = r'''
import json, sys
import numpy as np
import zarr
from copick.impl.filesystem import CopickRootFSSpec
from copick.util.relion import picks_to_df_relion

config, shapes, vs, mode = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
root = CopickRootFSSpec.from_file(config)
out = {}
if mode == "read":
    for run in root.runs:
        # the RELION converter takes the tomogram's shape from a tomogram of the run
        spacing = run.new_voxel_spacing(voxel_size=vs, exist_ok=True)
        tomo = spacing.new_tomogram("wbp", exist_ok=True)
        zarr.open(tomo.zarr(), mode="a").zeros("0", shape=tuple(shapes[run.name]), dtype="f4", overwrite=True)
        for picks in run.picks:
            pts, mats = picks.numpy()
            rel = picks_to_df_relion(picks)
            out[f"{run.name}/{picks.pickable_object_name}/{picks.user_id}/{picks.session_id}"] = {
                "points": pts.tolist(), "mats": mats.tolist(), "relion": rel.to_dict(orient="list")}
else:
    run = root.get_run("TS1")
    picks = run.new_picks("fas", session_id="7", user_id="copick", exist_ok=True)
    data = json.loads(mode)
    picks.from_numpy(np.array(data["points"]), np.array(data["mats"]))
    picks.store()
print(json.dumps(out))
'''


def _run_copick(python: str, root: Path, mode: str) -> dict:
    shapes = json.dumps(SHAPES)
    res = subprocess.run([python, "-c", _COPICK_SCRIPT, str(root / "copick_config.json"), shapes, str(VS), mode],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_copick_itself_reads_and_writes_our_projects(oriented, tmp_path):
    python = _copick_python()
    if python is None:
        pytest.skip("copick is not installed (it needs zarr<3): set DEEPICT_COPICK_PYTHON to an interpreter with "
                    "copick, as .ci/run does")
    root = tmp_path / "proj"
    write_copick_dir(oriented, root)
    seen = _run_copick(python, root, "read")
    assert sorted(seen) == ["TS1/fas/deepict/0", "TS1/ribosome/deepict/0", "TS2/ribosome/deepict/0"]
    star = tmp_path / "p.star"
    write_table(oriented, star, shapes=SHAPES)
    import starfile

    ours = starfile.read(star)
    for key, got in seen.items():
        tomo, cls = key.split("/")[:2]
        sel = (oriented["tomo"] == tomo) & (oriented["class"] == cls)
        want = oriented[sel]
        np.testing.assert_allclose(got["points"], want[["x_A", "y_A", "z_A"]].to_numpy(), atol=1e-9)
        np.testing.assert_allclose(np.asarray(got["mats"])[:, :3, :3], _rot(want).as_matrix(), atol=1e-9)
        # copick's RELION converter and our STAR (read by starfile) give the same rotation and place
        rel = pd.DataFrame(got["relion"])
        mine = ours[(ours["rlnTomoName"] == tomo) & (ours["rlnClassName"] == cls)]
        theirs = Rotation.from_euler("ZYZ", rel[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(), degrees=True)
        mine_r = Rotation.from_euler("ZYZ", mine[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(), degrees=True)
        assert (theirs * mine_r.inv()).magnitude().max() < 1e-6
        for col in ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnCenteredCoordinateXAngst",
                    "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"):
            np.testing.assert_allclose(rel[col].to_numpy(), mine[col].to_numpy(), atol=1e-6, err_msg=col)
    # the other way: picks copick writes come back with their positions and orientations
    mats = np.tile(np.eye(4), (2, 1, 1))
    mats[:, :3, :3] = Rotation.from_euler("ZXZ", [[10, 20, 30], [-60, 120, 5]], degrees=True).as_matrix()
    points = [[100.0, 110.0, 120.0], [50.0, 60.0, 70.0]]
    _run_copick(python, root, json.dumps({"points": points, "mats": mats.tolist()}))
    theirs = read_table(root)
    theirs = theirs[(theirs["tomo"] == "TS1") & (theirs["class"] == "fas") & ~theirs["x_A"].isin(oriented["x_A"])]
    np.testing.assert_allclose(theirs[["x_A", "y_A", "z_A"]].to_numpy(), points, atol=1e-9)
    np.testing.assert_allclose(theirs[["x", "y", "z"]].to_numpy(), np.asarray(points) / VS, atol=1e-9)
    assert (_rot(theirs) * Rotation.from_matrix(mats[:, :3, :3]).inv()).magnitude().max() < 1e-9
    assert set(read_table(root)["class"]) == {"fas", "ribosome"}
