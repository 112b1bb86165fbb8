"""PredictOptions: window/margin everywhere, one rule each, the same message from run.yaml, CLI and API."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError
from deepict_dask.inference.options import PredictOptions
from deepict_dask.options import build
from deepict_dask.pipeline.config import parse_config

CONFIG = "inputs: {{paths: [t.mrc]}}\nmodels:\n  - name: m\n    path: demo3d\n    predict: {{{settings}}}\n"


def _config_error(settings: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(CONFIG.format(settings=settings), "run.yaml")
    return str(exc.value)


@pytest.mark.parametrize(("values", "flags", "field", "message"), [
    ({"window": 0}, ["--patch", "0"], "window", "Input should be greater than or equal to 1"),
    ({"margin": -1}, ["--overlap", "-1"], "margin", "Input should be greater than or equal to 0"),
    ({"window": 16, "margin": 8}, ["--patch", "16", "--overlap", "8"], "margin",
     "window 16 leaves nothing after cropping margin 8 per side"),
    ({"device": "gpu"}, ["--device", "gpu"], "device", "must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_same_bad_value_same_message_in_config_cli_and_api(tmp_path, capsys, values, flags, field, message):
    with pytest.raises(ValidationError, match=message):
        PredictOptions(**values)
    with pytest.raises(ConfigError) as exc:
        build(PredictOptions, values)
    assert str(exc.value) == f"{field}: {message}"
    settings = ", ".join(f"{k}: {v}" for k, v in values.items())
    assert _config_error(settings) == f"run.yaml: line 5, models[0].predict.{field}: {message}"
    rc = main(["predict", str(tmp_path / "missing.mrc"), "--model", "demo3d", "--out", str(tmp_path / "o"), *flags])
    assert rc == 2
    flag = {"window": "--patch", "margin": "--overlap", "device": "--device"}[field]
    assert capsys.readouterr().err.strip() == f"deepict predict: error: {flag} ({field}): {message}"


def test_options_are_frozen_and_dump_to_plain_json():
    opts = PredictOptions(window=96, margin=12, blend="gaussian")
    with pytest.raises(ValidationError):
        opts.window = 64  # type: ignore[misc]
    assert PredictOptions.model_validate(opts.model_dump(mode="json")) == opts
