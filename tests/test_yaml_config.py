"""YAML configs: safe loading, one error naming the file, the line and the key."""

import pytest
from pydantic import Field

from deepict_dask.errors import ConfigError
from deepict_dask.options import Options
from deepict_dask.yaml_config import parse_yaml_model


class Inner(Options):
    size: int = Field(1, ge=1)


class Outer(Options):
    name: str
    inner: Inner = Inner()


def test_values_and_lines():
    model, lines = parse_yaml_model("name: a\ninner:\n  size: 3\n", Outer, "f.yaml", "name:, inner:")
    assert model.inner.size == 3 and lines[("inner", "size")] == 3


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\ninner:\n  size: 0\n", "f.yaml: line 3, inner.size: Input should be greater than or equal to 1"),
    ("name: a\ncolour: red\n", "f.yaml: line 2, colour: unknown key"),
    ("inner: {size: 2}\n", "f.yaml: line 1, name: required key missing"),
    ("[1, 2]\n", "f.yaml: the configuration must be a mapping of sections (name:, inner:)"),
    ("name: [a\n", "not valid YAML"),
    ("name: !!python/object/apply:os.system [echo hi]\n", "f.yaml"),
])
def test_one_error_line(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_yaml_model(text, Outer, "f.yaml", "name:, inner:")
    assert message in str(exc.value) and "\n" not in str(exc.value)
