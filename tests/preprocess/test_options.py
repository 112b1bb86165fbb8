"""FilterOptions: one rule per setting, the same message from run.yaml, ``deepict filter`` and the API."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
from pydantic import ValidationError

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError
from deepict_dask.io import make_volume
from deepict_dask.options import build
from deepict_dask.pipeline.config import parse_config
from deepict_dask.preprocess import FilterOptions, apply_filter, normalize

CONFIG = "inputs: {{paths: [t.mrc]}}\npreprocess:\n  filter:\n    {key}: {value}\n"


def _config_error(key: str, value: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(CONFIG.format(key=key, value=value), "run.yaml")
    return str(exc.value)


def _cli_error(tmp_path, capsys, *argv: str) -> str:
    tomo = tmp_path / "t.mrc"
    with mrcfile.new(tomo, overwrite=True) as m:
        m.set_data(np.zeros((8, 8, 8), np.float32))
        m.voxel_size = 10.0
    assert main(["filter", str(tomo), "--out", str(tmp_path / "o"), *argv]) == 2
    assert not (tmp_path / "o").exists()  # refused before any output
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize(("field", "flag", "value", "message"), [
    ("lowpass_cutoff", "--lowpass-cutoff", "3", "Input should be less than or equal to 1"),
    ("lowpass_cutoff", "--lowpass-cutoff", "0", "Input should be greater than 0"),
    ("lowpass_width", "--lowpass-width", "-0.1", "Input should be greater than or equal to 0"),
    ("block_size", "--block-size", "4", "Input should be greater than or equal to 8"),
])
def test_same_bad_value_same_message_in_config_cli_and_api(tmp_path, capsys, field, flag, value, message):
    with pytest.raises(ValidationError, match=message):
        FilterOptions(**{field: float(value)})
    with pytest.raises(ConfigError) as exc:
        build(FilterOptions, {field: float(value)})
    assert str(exc.value) == f"{field}: {message}"
    assert f"run.yaml: line 4, preprocess.filter.{field}: {message}" == _config_error(field, value)
    assert _cli_error(tmp_path, capsys, flag, value) == f"deepict filter: error: {flag} ({field}): {message}"


def test_bounds_that_were_different_are_one_rule():
    """Width 0 (a hard step, which the filter supports) was refused by the config only; a cutoff
    above Nyquist was accepted by the CLI only. Now both places take the model's rule."""
    config = parse_config(CONFIG.format(key="lowpass_width", value="0"), "run.yaml")
    assert config.preprocess.filter.lowpass_width == 0.0
    assert "less than or equal to 1" in _config_error("lowpass_cutoff", "1.5")
    assert parse_config(CONFIG.format(key="lowpass_cutoff", value="null")).preprocess.filter.lowpass_cutoff is None


def _volume() -> object:
    rng = np.random.default_rng(0)
    return make_volume(rng.standard_normal((16, 20, 24)).astype(np.float32) * 3 + 7, 10.0)


def test_apply_filter_takes_the_options_model():
    vol = _volume()
    options = FilterOptions(mode="exact", lowpass_cutoff=0.4, lowpass_width=0.0)
    out = apply_filter(vol, options)
    assert out.attrs["equalization"]["lowpass_cutoff"] == 0.4 and out.attrs["equalization"]["mode"] == "exact"
    np.testing.assert_array_equal(out.values, apply_filter(vol, mode="exact", lowpass_cutoff=0.4, lowpass_width=0).values)
    # a setting given one by one goes through the same rule as the model's
    with pytest.raises(ConfigError, match="^lowpass_width: Input should be greater than or equal to 0$"):
        apply_filter(vol, options, lowpass_width=-1)


def test_disabled_filter_only_normalizes():
    vol = _volume()
    out = apply_filter(vol, FilterOptions(enabled=False))
    assert "equalization" not in out.attrs
    np.testing.assert_array_equal(out.values, normalize(vol).values)
