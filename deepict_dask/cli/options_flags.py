"""Command-line flags made from a stage's options model, so a setting's type, choices, default and
help are written once (in the model) and the command only says which flag sets which field.

A flag's value is handed to the model as it is: the model converts and checks it, and a bad value
is one :class:`~deepict_dask.errors.ConfigError` naming the flag and the field
(``--levels (levels): Input should be greater than or equal to 1``).
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from deepict_dask.options import build

M = TypeVar("M", bound=BaseModel)


def flag_dest(flag: str) -> str:
    """``--lowpass-cutoff`` -> ``lowpass_cutoff``: the attribute argparse stores a flag's value in."""
    return flag.lstrip("-").replace("-", "_")


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (an unset flag is ``None`` anyway)."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _type_and_choices(annotation: Any) -> tuple[Any, list[Any] | None]:
    """The argparse ``type`` and ``choices`` of a field: numbers and literals typed, anything else text
    (lengths, ``64,128,128`` ...) that the model itself parses."""
    plain = _plain(annotation)
    if get_origin(plain) is Literal:
        values = list(get_args(plain))
        return type(values[0]), values
    if plain in (bool, int, float, str):
        return plain, None
    return str, None


def field_kind(model: type[BaseModel], field: str) -> Any:
    """The argparse ``type`` of ``model``'s ``field`` (``int``, ``float``, ``str``, ``bool``)."""
    return _type_and_choices(model.model_fields[field].annotation)[0]


def model_default(model: type[BaseModel], field: str) -> Any:
    """The field's default in ``model`` (``None`` when it has none or a factory)."""
    default = model.model_fields[field].default
    return None if default is PydanticUndefined else default


def add_option_flags(parser: argparse.ArgumentParser | Any, model: type[BaseModel], flags: Mapping[str, str], *,
                     help: Mapping[str, str] | None = None, metavar: Mapping[str, str] | None = None,
                     unset: tuple[str, ...] = (), show_defaults: bool = False) -> None:
    """Add one flag per ``field: flag`` of ``flags``, typed and defaulted by ``model``.

    Parameters
    ----------
    parser
        The parser (or argument group) to add to.
    model
        The options model whose fields the flags set.
    flags
        Field name -> flag, e.g. ``{"lowpass_cutoff": "--lowpass-cutoff"}``. A ``--no-...`` flag of a
        boolean field sets it to false when given.
    help
        Field -> help text where the command words it differently from the field's description;
        ``%(default)s`` is the model's default.
    metavar
        Field -> metavar.
    unset
        Fields whose flag has no default (``None`` when not given), for values decided later
        (a model's tuned settings).
    show_defaults
        End each help text with the model's default, where the flag has one (not for switches).
    """
    for field, flag in flags.items():
        info = model.model_fields[field]
        text = (help or {}).get(field) or info.description or field.replace("_", " ")
        if flag.startswith("--no-"):
            parser.add_argument(flag, dest=flag_dest(flag), action="store_true", help=text)
            continue
        kind, choices = _type_and_choices(info.annotation)
        if kind is bool:
            parser.add_argument(flag, dest=flag_dest(flag), action="store_true", help=text)
            continue
        default = None if field in unset else model_default(model, field)
        if show_defaults and default is not None:
            text += " (default %(default)s)"
        if default is not None and not isinstance(default, (int, float, str)):
            default = str(default)
        kwargs: dict[str, Any] = {"type": kind, "default": default, "help": text}
        if choices is not None:
            kwargs["choices"] = choices
        if field in (metavar or {}):
            kwargs["metavar"] = (metavar or {})[field]
        parser.add_argument(flag, dest=flag_dest(flag), **kwargs)


def option_values(args: argparse.Namespace, flags: Mapping[str, str]) -> dict[str, Any]:
    """Field -> value of each flag given (or defaulted); ``--no-X`` given -> ``False``, else left out."""
    values: dict[str, Any] = {}
    for field, flag in flags.items():
        value = getattr(args, flag_dest(flag), None)
        if flag.startswith("--no-"):
            if value:
                values[field] = False
        elif value is not None and value is not False:
            values[field] = value
    return values


def options_from_args(model: type[M], args: argparse.Namespace, flags: Mapping[str, str],
                      values: Mapping[str, Any] | None = None) -> M:
    """``model`` built from the flags of :func:`add_option_flags` (and ``values``, which win).

    A bad value is one :class:`~deepict_dask.errors.ConfigError` naming the flag and the field.
    """
    return build(model, option_values(args, flags) | dict(values or {}), flags=flags)
