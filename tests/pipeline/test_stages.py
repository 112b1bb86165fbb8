"""The pick and segment stages' parameters: a target's settings -> the PickOptions the stage runs with."""

from __future__ import annotations

import logging

import pytest

from deepict_dask.pick.options import PickOptions
from deepict_dask.pipeline.config import TargetConfig, parse_config
from deepict_dask.pipeline.stages import _target_params

TUNED = {"threshold": 0.35, "min_size": 40, "method": "watershed", "min_distance_A": 60.0}


def _runs_with(target: dict, tuned: dict | None = None) -> PickOptions:
    params = _target_params(TargetConfig.model_validate({"name": "ribo", "model": "m", **target}), 64, tuned)
    assert set(params) == {"target", "model", "class", "pick", "chunks"}
    return PickOptions.model_validate(params["pick"])  # what run_pick / run_segment do


def test_without_tuned_values_the_built_in_defaults():
    o = _runs_with({})
    assert (o.threshold, o.min_size, o.max_size, o.connectivity, o.method.name) == (0.5, None, None, 26, "cc")
    o = _runs_with({"pick": {"threshold": 0.7, "method": {"name": "watershed", "min_distance": 40}}})
    assert o.threshold == 0.7 and str(o.method.min_distance) == "40A" and o.method.coarsen == "auto"


def test_tuned_values_fill_what_the_config_leaves_unset():
    o = _runs_with({}, TUNED)
    assert (o.threshold, o.min_size, o.method.name, str(o.method.min_distance)) == (0.35, 40, "watershed", "60A")
    # the config's own values win; the tuned seed distance only goes with the tuned method
    o = _runs_with({"pick": {"threshold": 0.6, "method": "cc"}}, TUNED)
    assert (o.threshold, o.min_size, o.method.model_dump()) == (0.6, 40, {"name": "cc"})
    o = _runs_with({"pick": {"method": {"name": "watershed", "min_distance": "30A"}}}, TUNED)
    assert str(o.method.min_distance) == "30A"
    o = _runs_with({"pick": {"method": "watershed"}}, TUNED)
    assert str(o.method.min_distance) == "60A"
    # a size bound in the config makes the size filter the user's
    o = _runs_with({"pick": {"max_size": 500}}, TUNED)
    assert (o.min_size, o.max_size) == (None, 500)


def test_segmentation_uses_the_pick_threshold():
    o = _runs_with({"kind": "segmentation", "pick": {"threshold": 0.25}}, TUNED)
    assert o.threshold == 0.25
    assert _runs_with({"kind": "segmentation"}, {"threshold": 0.4}).threshold == 0.4


def test_stage_params_are_plain_json_and_stable():
    import json

    params = _target_params(TargetConfig.model_validate(
        {"name": "ribo", "model": "m", "pick": {"radius": "5vx", "duplicate_radius": 80,
                                                 "context": {"target": "cyto", "mode": "colocalization",
                                                             "distance": 50}}}), 64, TUNED)
    text = json.dumps(params, sort_keys=True)
    assert json.loads(text) == params
    assert params["pick"]["radius"] == "5vx" and params["pick"]["context"]["distance"] == "50A"
    assert PickOptions.model_validate(params["pick"]).model_dump(mode="json") == params["pick"]


V1 = """\
inputs: {paths: [a.mrc]}
models: [{name: m, path: demo3d}]
targets:
  - {name: cyto, model: m, kind: segmentation, threshold: 0.4}
  - name: ribo
    model: m
    threshold: 0.6
    min_size: 3
    cluster: watershed
    min_distance: 40
    coarsen: 2
    context: [{target: cyto}]
  - {name: fas, model: m, cluster: meanshift, bandwidth: 60, context: {target: cyto, mode: colocalization}}
"""

V2 = """\
schema_version: 2
inputs: {paths: [a.mrc]}
models: [{name: m, path: demo3d}]
targets:
  - {name: cyto, model: m, kind: segmentation, pick: {threshold: 0.4}}
  - name: ribo
    model: m
    pick:
      threshold: 0.6
      min_size: 3
      method: {name: watershed, min_distance: 40A, coarsen: 2}
      context: {target: cyto, mode: intersection}
  - name: fas
    model: m
    pick:
      method: {name: meanshift, bandwidth: 60A}
      context: {target: cyto, mode: colocalization, distance: 0A}
"""


def test_v1_flat_target_keys_run_as_before_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="deepict_dask.pipeline.config"):
        old = parse_config(V1)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "bandwidth, cluster, coarsen, context, min_distance, min_size, threshold" in warnings[0]
    assert "pick:" in warnings[0]
    new = parse_config(V2)
    for a, b in zip(old.targets, new.targets):
        assert _target_params(a, 64) == _target_params(b, 64)


@pytest.mark.parametrize("target, message", [
    ({"pick": {"threshold": 1.5}}, "pick.threshold"),
    ({"threshold": 0}, "pick.threshold"),  # a v1 key is checked where it now lives
])
def test_bad_target_values_name_the_pick_field(target, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        TargetConfig.model_validate({"name": "ribo", "model": "m", **target})
