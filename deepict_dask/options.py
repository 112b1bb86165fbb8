"""The base of every stage's options model, and one way to say what is wrong with a value.

Each stage owns one pydantic model (``FilterOptions``, ``PredictOptions``, ``PickOptions`` ...) that
the run configuration, the stage, the CLI and the Python API all use unchanged. So a rule about a
setting is written once, in its model, and a bad value gets the same message everywhere; only the
*place* differs: ``run.yaml: line 9, preprocess.filter.lowpass_cutoff: ...`` in a config,
``--lowpass-cutoff (lowpass_cutoff): ...`` on the command line, ``lowpass_cutoff: ...`` from the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from deepict_dask.errors import ConfigError

O = TypeVar("O", bound="Options")  # noqa: E741


class Options(BaseModel):
    """A stage's settings: unknown keys are errors, values are checked when the model is built."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def validation_problems(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) for each error of ``exc``, in words a user reads (no pydantic prefixes)."""
    problems = []
    for err in exc.errors():
        loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key missing"
        elif err["type"] in ("value_error", "assertion_error"):  # our own validators: their message only
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append((loc, msg))
    return problems


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('targets', 0, 'pick', 'threshold')`` -> ``targets[0].pick.threshold``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def build(cls: type[O], values: Mapping[str, Any], *, flags: Mapping[str, str] | None = None,
          source: str | None = None) -> O:
    """Validate ``values`` as ``cls``; a bad value is one :class:`ConfigError` naming the field.

    ``flags`` maps field names (or dotted paths of nested fields) to the command-line flags that set
    them, so the CLI names both (``--lowpass-cutoff (lowpass_cutoff): ...``); the message itself is
    the model's.
    """
    try:
        return cls.model_validate(dict(values))
    except ValidationError as exc:
        parts = []
        for loc, msg in validation_problems(exc):
            field = format_loc(loc)
            # a nested field may have its own flag (``method.min_distance``), else its top-level field's
            flag = ((flags or {}).get(field) or (flags or {}).get(str(loc[0]))) if loc else None
            parts.append(f"{flag} ({field}): {msg}" if flag else f"{field}: {msg}")
        raise ConfigError("; ".join(parts), source) from None
