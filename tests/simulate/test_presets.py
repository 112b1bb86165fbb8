"""The demo training data: reproducible acquisition sampling inside the documented ranges, the held-out
configuration never trained on, and the simulator's contrast overrides it relies on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepict_dask.errors import ConfigError
from deepict_dask.simulate import simulate_tomogram
from deepict_dask.simulate.presets import resolve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def data_script():
    spec = importlib.util.spec_from_file_location("train_demo_data", EXAMPLES / "train_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_demo_data"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("train_demo_data", None)


def _inside(value: float, key: str, ranges) -> bool:
    lo, hi = ranges[key]
    return lo <= value <= hi


def test_sampling_is_reproducible_and_varies(data_script):
    a = data_script.sample_params(107)
    assert a == data_script.sample_params(107)
    b = data_script.sample_params(108)
    assert a["overrides"] != b["overrides"]
    assert a["voxel_size"] != b["voxel_size"]
    # the plan is a pure function of the seeds too
    assert data_script.plan() == data_script.plan()


def test_samples_stay_inside_the_documented_ranges(data_script):
    r = data_script.RANGES
    nominal = data_script.NOMINAL_VOXEL_SIZE
    n_crowded = 0
    asymmetric = 0
    for seed in range(101, 200):
        s = data_script.sample_params(seed)
        o = s["overrides"]
        assert s["nominal_voxel_size"] == nominal
        assert r["voxel_scale"][0] - 1e-3 <= s["voxel_size"] / nominal <= r["voxel_scale"][1] + 1e-3
        for key in ("defocus_um", "snr", "bfactor", "tilt_max", "tilt_min", "ice_fraction", "ice_contrast",
                    "particle_contrast", "membrane_contrast"):
            assert _inside(o[key], key, r), (seed, key, o[key])
        for cls, v in o["concentration"].items():
            assert _inside(v, cls, r), (seed, cls, v)
        assert _inside(o["crowders"]["cytosol"], "crowders", r)
        assert _inside(o["background"]["cytosol"], "cytosol_background", r)
        assert _inside(o["background"]["organelle"], "organelle_background", r)
        if o["crowded"] is not None:
            n_crowded += 1
            assert _inside(o["crowded"], "crowded", r)
        asymmetric += abs(o["tilt_max"] + o["tilt_min"]) > 5
    # both kinds of tomogram occur: crowded and not, symmetric-ish and clearly asymmetric wedges
    assert 5 < n_crowded < 60
    assert asymmetric > 20


def test_held_out_configuration_is_never_in_the_training_set(data_script):
    specs = data_script.plan()
    held = data_script.HELD_OUT
    seeds = [s["seed"] for s in specs]
    assert len(set(seeds)) == len(seeds)
    assert all(101 <= x < 200 for x in seeds)  # seeds >= 200 belong to the demo and the evaluation
    train = {s["seed"] for s in specs if s["split"] == "train"}
    val = {s["seed"] for s in specs if s["split"] == "validation"}
    assert train and val and not train & val
    for s in specs:
        assert (s["preset"], s["imaging"]) == (data_script.FAMILY["preset"], data_script.FAMILY["imaging"])
        assert s["imaging"] != held["imaging"]
        # no override turns the defocus family into a phase-plate acquisition
        assert "phase_shift_deg" not in s["overrides"]
        content, img = resolve(s["preset"], s["imaging"], s["overrides"])  # every name is a valid override
        assert img.phase_shift_deg == 0.0 and img.defocus_um >= 2.5


def test_declared_voxel_size_rescales_the_tables(data_script):
    sim = simulate_tomogram((40, 64, 64), 12.0, seed=3, preset="particles", counts={"ribosome": 2},
                            classes=("ribosome",))
    out = data_script.declare_voxel_size(sim, 13.48)
    assert out.voxel_size == 13.48 and out.params["simulated_voxel_size"] == 12.0
    np.testing.assert_allclose(out.table["x_A"], sim.table["x"] * 13.48)
    np.testing.assert_allclose(out.table["z"], sim.table["z"])


def test_write_configs_lists_every_tomogram(data_script, tmp_path):
    for name in ("train_demo3d.yaml", "train_demo2d.yaml"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    specs = data_script.plan()
    for s in specs:
        s["files"] = data_script.files_of(s["name"], True)
    data_script.write_configs(specs, tmp_path / "data", True, tmp_path)
    cfg = yaml.safe_load((tmp_path / "train_demo3d.yaml").read_text())
    assert len(cfg["data"]["train"]) == len(data_script.TRAIN_SEEDS)
    assert cfg["data"]["validation"][0]["tomogram"] == "data/tomograms_filtered/sim_0150.mrc"
    assert cfg["data"]["train"][0]["labels"]["fas"] == {"path": "data/labels/sim_0101_classes.mrc", "values": [2]}
    assert cfg["preprocessing"]["filter"] == "default"
    cfg2 = yaml.safe_load((tmp_path / "train_demo2d.yaml").read_text())
    assert cfg2["data"]["train"][0]["labels"]["organelle"]["values"] == [2]


@pytest.mark.parametrize("name", ["particle_contrast", "membrane_contrast"])
def test_contrast_overrides_scale_their_structures_linearly(name):
    kw = dict(shape=(32, 64, 64), voxel_size=13.48, seed=5, preset="cell", counts={"ribosome": 3},
              vesicle_density=0.0, microtubule_density=0.0, actin_density=0.0, fiducial_density=0.0)
    d = {f: np.asarray(simulate_tomogram(**kw, **{name: f}).density, np.float64) for f in (1.0, 2.0, 3.0)}
    step = d[2.0] - d[1.0]
    assert np.abs(step).max() > 0.05
    np.testing.assert_allclose(d[3.0] - d[1.0], 2 * step, atol=1e-4)
    sim = simulate_tomogram(**kw)
    where = (np.asarray(sim.labels) > 0) if name == "particle_contrast" else (np.asarray(sim.membrane) > 0)
    assert where.any()
    # the change sits on the structure it names
    assert np.abs(step[where]).mean() > 5 * np.abs(step[~where]).mean()


def test_contrast_overrides_are_validated():
    with pytest.raises(ConfigError, match="membrane_contrast must be > 0"):
        resolve("cell", "defocus", {"membrane_contrast": 0.0})
    with pytest.raises(ConfigError, match="particle_contrast must be > 0"):
        resolve("cell", "defocus", {"particle_contrast": -1.0})
