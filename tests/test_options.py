"""The options base: one message for a bad value, naming the field (and the flag on the CLI)."""

import pytest
from pydantic import Field

from deepict_dask.errors import ConfigError
from deepict_dask.options import Options, build


class Toy(Options):
    cutoff: float = Field(0.5, gt=0, le=1)


def test_build_names_field_and_flag():
    with pytest.raises(ConfigError) as api:
        build(Toy, {"cutoff": 3})
    with pytest.raises(ConfigError) as cli:
        build(Toy, {"cutoff": 3}, flags={"cutoff": "--cutoff"})
    assert str(api.value) == "cutoff: Input should be less than or equal to 1"
    assert str(cli.value) == "--cutoff (cutoff): Input should be less than or equal to 1"


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="colour: unknown key"):
        build(Toy, {"colour": "red"})
    assert build(Toy, {}).cutoff == 0.5
