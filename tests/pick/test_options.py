"""One rule per setting: the same bad value gets the same message from the config, the CLI and the API."""

from __future__ import annotations

import contextlib

import mrcfile
import numpy as np
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError
from deepict_dask.options import build
from deepict_dask.pick.options import PickOptions
from deepict_dask.pipeline.config import parse_config

CONFIG = """\
inputs: {{paths: [a.mrc]}}
models: [{{name: m, path: demo3d}}]
targets:
  - name: ribo
    model: m
    pick: {pick}
"""

CASES = [
    # (pick options, CLI flags, field, message)
    ({"threshold": 1.5}, ["--threshold", "1.5"], "threshold", "Input should be less than or equal to 1"),
    ({"method": {"name": "watershed", "min_distance": "-3A"}}, ["--method", "watershed", "--min-distance=-3A"],
     "method.min_distance", "a length must not be negative, got -3.0"),
    ({"method": "kmeans"}, ["--method", "kmeans"], "method", "unknown method 'kmeans'; choose one of cc, meanshift"),
    ({"context": {"target": "mask.mrc", "mode": "colocalization"}},
     ["--context", "mask.mrc", "--context-mode", "colocalization"], "context", "mode colocalization needs a distance"),
]


@pytest.mark.parametrize("values, flags, field, message", CASES)
def test_same_bad_value_same_message_everywhere(values, flags, field, message, tmp_path, monkeypatch, capsys):
    import json

    with pytest.raises(ConfigError) as api:
        build(PickOptions, values)
    assert str(api.value).startswith(f"{field}: {message}")

    with pytest.raises(ConfigError) as config:
        parse_config(CONFIG.format(pick=json.dumps(values)), "run.yaml")
    assert f"targets[0].pick.{field}: {message}" in str(config.value)

    import deepict_dask.cluster

    monkeypatch.setattr(deepict_dask.cluster, "dask_client", lambda *a, **k: contextlib.nullcontext())
    path = tmp_path / "map.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((4, 4, 4), np.float32))
    assert main(["pick", str(path), "--out", str(tmp_path / "p.csv"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepict pick: error: --") and f" ({field}): {message}" in err
    assert not (tmp_path / "p.csv").exists()


def test_method_by_name_or_with_parameters():
    assert PickOptions(method="watershed").method.model_dump(exclude_unset=True) == {"name": "watershed"}
    o = PickOptions(method={"name": "watershed", "min_distance": "40A"})
    assert o.model_dump(mode="json")["method"]["min_distance"] == "40A"
    assert PickOptions.model_validate(o.model_dump(mode="json")) == o
    with pytest.raises(ConfigError, match=r"^method\.min_distance: unknown key"):
        build(PickOptions, {"method": {"name": "cc", "min_distance": "40A"}})


def test_cli_lengths_without_unit_are_voxels(tmp_path, monkeypatch):
    """As before: ``--min-distance 4`` means 4 voxels on the command line (a plain number in a config: A)."""
    from deepict_dask.cli.main import build_parser
    from deepict_dask.cli.pick import options_from_args

    args = build_parser().parse_args(["pick", "m.mrc", "-o", "o.csv", "--method", "watershed", "--min-distance", "4",
                                      "--radius", "3", "--smooth", "1.5"])
    options, loose = options_from_args(args)
    assert str(options.method.min_distance) == "4vx" and str(options.radius) == "3vx" and loose is None
    assert options.method.sigma == 1.5
    args = build_parser().parse_args(["pick", "m.mrc", "-o", "o.csv", "--min-distance", "40A"])
    options, loose = options_from_args(args)
    assert "method" not in options.model_fields_set and loose == {"min_distance": "40A"}


def test_lengths_serialise_as_plain_json():
    o = build(PickOptions, {"method": {"name": "meanshift", "bandwidth": ["ribosome=60A", "fas=5vx"]},
                            "duplicate_radius": [10, 20, 30], "radius": 40})
    dumped = o.model_dump(mode="json")
    assert dumped["method"]["bandwidth"] == {"ribosome": "60A", "fas": "5vx"}
    assert dumped["duplicate_radius"] == [10.0, 20.0, 30.0] and dumped["radius"] == "40A"
    assert PickOptions.model_validate(dumped) == o
