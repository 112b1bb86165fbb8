"""One length type: units travel with the value until a voxel size is known."""

import math

import pytest
from pydantic import ValidationError

from deepict_dask.options import Options
from deepict_dask.units import Length, LengthField, parse_length


@pytest.mark.parametrize("text, value, unit", [
    ("40A", 40.0, "A"), ("40 Å", 40.0, "A"), ("2.5angstrom", 2.5, "A"), ("4vx", 4.0, "vx"),
    ("4 voxels", 4.0, "vx"), ("1e2A", 100.0, "A"), (12, 12.0, "A"), ("12", 12.0, "A"),
])
def test_parse_length_reads_units(text, value, unit):
    assert parse_length(text) == Length(value, unit)


def test_bare_numbers_take_the_callers_default_unit():
    assert parse_length(3, "vx") == Length(3.0, "vx")
    assert parse_length("3", "vx") == Length(3.0, "vx")
    assert parse_length("3A", "vx") == Length(3.0, "A")


@pytest.mark.parametrize("bad", ["-3A", "forty", "4 parsecs", float("nan"), True, None])
def test_bad_lengths_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match="length"):
        parse_length(bad)


def test_conversion_uses_the_x_voxel_size():
    assert Length(4, "vx").angstrom((10.0, 12.0, 13.48)) == pytest.approx(53.92)
    assert Length(27, "A").voxels(13.5) == pytest.approx(2.0)
    assert Length(27, "A").angstrom(13.5) == 27
    with pytest.raises(ValueError, match="voxel size"):
        Length(2, "vx").angstrom(0)


def test_pydantic_field_round_trips_as_text():
    class M(Options):
        radius: LengthField = Length(40)

    m = M.model_validate({"radius": "3vx"})
    assert m.radius == Length(3, "vx")
    assert m.model_dump() == {"radius": "3vx"}
    assert M.model_validate(m.model_dump()) == m
    assert M().model_dump(mode="json") == {"radius": "40A"}
    with pytest.raises(ValidationError, match="must not be negative"):
        M(radius=-1)
    assert not math.isnan(M(radius="0A").radius.value)
