"""Config -> the options each of convert, preprocess and predict runs with (no renames, no patched defaults),
and schema-1 configs with flat model keys."""

from __future__ import annotations

import logging

import pytest

from deepict_dask.errors import ConfigError
from deepict_dask.inference.options import PredictOptions
from deepict_dask.io.convert import ConvertOptions
from deepict_dask.pipeline.config import parse_config
from deepict_dask.pipeline.engine import TomoJob
from deepict_dask.pipeline.stages import build_stages
from deepict_dask.preprocess.options import FilterOptions

V2 = """\
schema_version: 2
inputs: {paths: [t.mrc]}
output: {chunks: 48, levels: 2}
preprocess:
  filter: {lowpass_cutoff: 0.3, lowpass_width: 0, mode: blockwise, halo: 6}
models:
  - name: m
    path: demo3d
    predict: {window: 64, margin: 8, blend: gaussian, batch_size: 3, dtype: float16, device: cpu}
  - name: n
    path: demo3d
    predict: {chunk: 40}
"""

V1_MODELS = """\
inputs: {paths: [t.mrc]}
output: {chunks: 48, levels: 2}
models:
  - {name: m, path: demo3d, patch: 64, overlap: 8, blend: gaussian, batch_size: 3, dtype: float16, device: cpu}
  - {name: n, path: demo3d}
"""


def _stages(text: str, tmp_path, header=None) -> dict:
    config = parse_config(text, "run.yaml")
    job = TomoJob(name="t", source=str(tmp_path / "t.mrc"), run_dir=str(tmp_path / "run"), header=header or {})
    return {s.name: s for s in build_stages(config, job)}


def test_each_stage_runs_with_the_configs_options(tmp_path):
    stages = _stages(V2, tmp_path, header={"voxel_size": [7.0, 7.0, 7.0], "voxel_size_given": True})
    convert = ConvertOptions.model_validate(stages["convert"].params["convert"])
    assert convert == ConvertOptions(chunks=48, levels=2, voxel_size=(7.0, 7.0, 7.0))
    flt = FilterOptions.model_validate(stages["preprocess"].params["filter"])
    assert flt == FilterOptions(lowpass_cutoff=0.3, lowpass_width=0.0, mode="blockwise", halo=6)
    assert stages["preprocess"].params["target_sha256"] is None  # the shipped target
    m = PredictOptions.model_validate(stages["predict:m"].params["predict"])
    # the config's values unchanged; the run's one explicit rule: blocks of twice the store chunks, >= 64
    assert m == PredictOptions(window=64, margin=8, blend="gaussian", batch_size=3, dtype="float16", device="cpu",
                               chunk=96)
    n = PredictOptions.model_validate(stages["predict:n"].params["predict"])
    assert n == PredictOptions(chunk=40)  # a chunk the config states is kept
    assert stages["predict:m"].params["image"] == "filtered"


def test_small_store_chunks_still_predict_blocks_of_64(tmp_path):
    stages = _stages(V2.replace("chunks: 48", "chunks: 16"), tmp_path)
    assert PredictOptions.model_validate(stages["predict:m"].params["predict"]).chunk == 64
    assert ConvertOptions.model_validate(stages["convert"].params["convert"]).voxel_size is None  # header's own


def test_schema_1_flat_model_keys_load_with_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="deepict_dask.pipeline.config"):
        config = parse_config(V1_MODELS, "run.yaml")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["models[m]: patch, overlap, blend, batch_size, dtype, device on a model is the old spelling "
                        "(schema 1); write predict.window, predict.margin, predict.blend, predict.batch_size, "
                        "predict.dtype, predict.device"]
    assert config.models[0].predict == PredictOptions(window=64, margin=8, blend="gaussian", batch_size=3,
                                                      dtype="float16", device="cpu")
    assert config.models[1].predict == PredictOptions()
    # and the run then predicts exactly as with the new spelling
    new = _stages(V2.split("  - name: n")[0].replace("preprocess:\n  filter: {lowpass_cutoff: 0.3, lowpass_width: 0, "
                                                      "mode: blockwise, halo: 6}\n", ""), tmp_path)
    old = _stages(V1_MODELS, tmp_path)
    assert old["predict:m"].params == new["predict:m"].params


def test_flat_key_and_new_key_together_keep_the_new_one():
    text = V1_MODELS.replace("patch: 64,", "patch: 64, predict: {window: 32},")
    assert parse_config(text).models[0].predict.window == 32


def test_unknown_schema_version_is_refused():
    with pytest.raises(ConfigError, match=r"^run.yaml: line 1, schema_version: Input should be 1 or 2$"):
        parse_config("schema_version: 3\n" + V1_MODELS, "run.yaml")
