"""YAML configuration files read safely, validated by a pydantic model, errors naming line and key.

Users edit these files by hand, so a bad value is reported as
``run.yaml: line 12, targets[0].pick.threshold: Input should be less than or equal to 1``. Used by
``deepict run`` (:mod:`deepict_dask.pipeline.config`) and ``deepict mine run`` (:mod:`deepict_dask.mine.config`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from deepict_dask.errors import ConfigError
from deepict_dask.options import format_loc, validation_problems

M = TypeVar("M", bound=BaseModel)
Lines = dict[tuple[Any, ...], int]


def _walk_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Record the 1-based line of every mapping key and sequence item under ``path``."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            kpath = path + (key.value,)
            out[kpath] = key.start_mark.line + 1
            _walk_lines(value, kpath, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_lines(item, path + (i,), out)


class LineLoader(yaml.SafeLoader):
    """A safe YAML loader that also remembers the line of every key and list item."""

    def load_with_lines(self) -> tuple[Any, dict[tuple[Any, ...], int]]:
        node = self.get_single_node()
        lines: dict[tuple[Any, ...], int] = {}
        if node is None:
            return None, lines
        _walk_lines(node, (), lines)
        return self.construct_document(node), lines


def line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    loc = tuple(part for part in loc if not (isinstance(part, str) and part.startswith("function-")))
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def located(loc: tuple[Any, ...], msg: str, lines: dict[tuple[Any, ...], int]) -> str:
    line = line_of(loc, lines)
    return f"{'line ' + str(line) + ', ' if line else ''}{format_loc(loc)}: {msg}"


def parse_yaml_model(text: str, model: type[M], source: str, hint: str) -> tuple[M, Lines]:
    """Safe-load YAML ``text`` and validate it as ``model``; returns the model and the line of every key.

    ``hint`` says which sections the file holds, for a file that is not a mapping. Every problem is
    one :class:`ConfigError` naming ``source``, the line and the key.
    """
    loader = LineLoader(text)
    try:
        data, lines = loader.load_with_lines()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{where}not valid YAML: {getattr(exc, 'problem', exc)}", source) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"the configuration must be a mapping of sections ({hint})", source)
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        raise ConfigError("; ".join(located(loc, msg, lines) for loc, msg in validation_problems(exc)), source) from None
