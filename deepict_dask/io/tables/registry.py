"""Which table formats exist, how a path's format is told, and reading/writing through them.

A format is one :class:`TableFormat` registered with :func:`register_format`; :func:`read_table`
and :func:`write_table` know formats only through this registry, so a new format is one new module
that registers itself. Everything a reader or writer may need beyond the table and the path
(voxel size, tomogram shape, class numbers, ...) comes in one :class:`TableContext`; callers give
all they know and each format uses what it needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.tables.schema import VoxelSizeNeeded, empty_table, validate_table


@dataclass(frozen=True)
class TableContext:
    """What is known about a table besides its rows; formats that do not record something take it from here.

    Attributes
    ----------
    voxel_size : Angstrom, one value or (z, y, x), for formats that store only voxels or only Angstrom.
    shape : (z, y, x) of the one tomogram (RELION 5 centred coordinates).
    shapes : tomogram name -> (z, y, x), for tables of several tomograms.
    tomo : the tomogram name, for formats that do not record it.
    class_names : class number -> name, for formats that number classes (reading).
    class_ids : class name -> number, for formats that number classes (writing).
    tilt_series_pixel_size : Angstrom, for RELION's ``rlnTomoTiltSeriesPixelSize``.
    """

    voxel_size: float | Sequence[float] | None = None
    shape: Sequence[int] | None = None
    shapes: Mapping[str, Sequence[int]] | None = None
    tomo: str | None = None
    class_names: Mapping[int, str] | None = None
    class_ids: Mapping[str, int] | None = None
    tilt_series_pixel_size: float | None = None


#: ``read(path, context) -> table`` (any columns the schema validation accepts)
Reader = Callable[[Path, TableContext], pd.DataFrame]
#: ``write(table, out, context, target=..., overwrite=...)``: ``out`` is a temporary file renamed to
#: ``target`` afterwards (file formats) or ``target`` itself (directory formats, which write atomically
#: file by file and honour ``overwrite``); messages name ``target``.
Writer = Callable[..., None]


@dataclass(frozen=True)
class TableFormat:
    """One table format: its name, the suffixes that name it, its reader and writer.

    Attributes
    ----------
    name : what ``fmt=``, ``--format`` and ``output.table_formats`` call it.
    suffixes : file suffixes (lower case, with the dot) that mean this format; the first is the one
        a run gives new files. Empty for directory formats.
    read, write : see :data:`Reader` and :data:`Writer`.
    description : one line for help texts.
    uses : the :class:`TableContext` fields the format reads.
    wants : context field -> what the output lacks without it (callers that can supply it warn).
    directory : a directory (a project) rather than one file.
    one_set : a file holds one class of one tomogram.
    many_tomograms : a file records which tomogram each particle is in (run-wide tables need it).
    detect : recognises an existing path as this format whatever its suffix says (a copick
        project directory, a headerless motive list named ``.csv``).
    """

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    write: Writer
    description: str = ""
    uses: frozenset[str] = frozenset()
    wants: Mapping[str, str] = field(default_factory=dict)
    directory: bool = False
    one_set: bool = False
    many_tomograms: bool = True
    detect: Callable[[Path], bool] | None = None


_REGISTRY: dict[str, TableFormat] = {}
#: names of the formats every process has by importing the package (built-in and plugins); the
#: others were registered at run time in one process and must be handed to Dask workers
_SHIPPED: set[str] = set()


def register_format(fmt: TableFormat, *, replace_existing: bool = False) -> TableFormat:
    """Add a table format; every reader, writer, CLI choice and config check knows it from then on.

    A format registered in a script or notebook exists in that process only; a pipeline run hands it
    to its Dask workers (:func:`runtime_formats`, :func:`ensure_formats`). To have it everywhere
    (every worker, every CLI call) ship it as a plugin: see :func:`load_plugin_formats`.
    """
    if fmt.name in _REGISTRY and not replace_existing:
        raise ValueError(f"table format {fmt.name!r} is already registered")
    unknown = set(fmt.uses) - set(TableContext.__dataclass_fields__)
    if unknown:
        raise ValueError(f"table format {fmt.name!r} uses unknown context fields {sorted(unknown)}")
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a format (tests that register a toy one)."""
    _REGISTRY.pop(name, None)
    _SHIPPED.discard(name)


def load_plugin_formats() -> list[str]:
    """Register the formats installed packages declare under the ``deepict_dask.table_formats``
    entry-point group (:mod:`deepict_dask.plugins`); called once when :mod:`deepict_dask.io.tables` is
    imported, so every process (a CLI call, each Dask worker) has them. Returns the plugins loaded.

    A plugin declares, in its ``pyproject.toml``::

        [project.entry-points."deepict_dask.table_formats"]
        mine = "my_package.tables:FORMAT"      # a TableFormat, or a module that registers one
    """
    from deepict_dask.plugins import TABLE_FORMATS, load_entry_points

    def register(obj: Any) -> None:
        if isinstance(obj, TableFormat) and _REGISTRY.get(obj.name) is not obj:
            register_format(obj)

    return load_entry_points(TABLE_FORMATS, register)


def mark_shipped() -> None:
    """Record the formats registered so far as ones every process has (built-in and plugins)."""
    _SHIPPED.update(_REGISTRY)


def runtime_formats() -> tuple[TableFormat, ...]:
    """Formats registered at run time in this process only (not built in, not a plugin)."""
    return tuple(fmt for name, fmt in _REGISTRY.items() if name not in _SHIPPED)


def ensure_formats(formats: Sequence[TableFormat]) -> None:
    """On a Dask worker: register the client's run-time formats that this process lacks."""
    for fmt in formats:
        if fmt.name not in _REGISTRY:
            register_format(fmt)


def format_names() -> tuple[str, ...]:
    """The registered formats' names, in the order they were registered."""
    return tuple(_REGISTRY)


def get_format(name: str, path: str | os.PathLike | None = None) -> TableFormat:
    """The format called ``name``; one clear error listing the names if there is none."""
    if name not in _REGISTRY:
        raise InputError(f"unknown table format {name!r}; choose one of {list(_REGISTRY)}", path)
    return _REGISTRY[name]


def suffix_format(path: str | os.PathLike) -> TableFormat:
    """The format a new file gets from its suffix (``.csv`` is the project's schema, not a motive list)."""
    path = Path(path)
    for fmt in _REGISTRY.values():
        if path.suffix.lower() in fmt.suffixes:
            return fmt
    files = ", ".join(f.suffixes[0] for f in _REGISTRY.values() if f.suffixes)
    dirs = "; ".join(f"a {f.name} project is a directory" for f in _REGISTRY.values() if f.directory)
    raise InputError(f"cannot tell the table format from the suffix {path.suffix!r}; use {files} "
                     f"(or give the format{'; ' + dirs if dirs else ''})", path)


def format_of_new(path: str | os.PathLike, fmt: str | None = None) -> TableFormat:
    """The format an output at ``path`` is written in: ``fmt`` if given, else its suffix's."""
    return get_format(fmt, path) if fmt else suffix_format(path)


def missing_context(fmt: TableFormat, context: TableContext) -> dict[str, str]:
    """Context field -> what ``fmt``'s output lacks without it, for each field it wants that is unset."""
    return {option: loss for option, loss in fmt.wants.items() if getattr(context, option, None) is None}


def table_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` if given, else what recognises it (directories, ``.csv`` motive
    lists), else its suffix."""
    if fmt:
        return get_format(fmt, path).name
    p = Path(path)
    for candidate in _REGISTRY.values():
        if candidate.detect is not None and p.exists() and candidate.detect(p):
            return candidate.name
    return suffix_format(p).name


def read_table(
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    tomo: str | None = None,
    class_names: Mapping[int, str] | None = None,
    angstrom_optional: bool = False,
    context: TableContext | None = None,
) -> pd.DataFrame:
    """Read a coordinate table in any registered format into the schema.

    Parameters
    ----------
    path : a table file, or a project directory of a directory format.
    fmt : the format's name (default: told from the path).
    voxel_size, shape, tomo, class_names : shorthands for the :class:`TableContext` fields of the
        same names (they replace those of ``context``): the voxel size (Angstrom, scalar or z,y,x)
        where a format stores only one of voxels or Angstrom and does not record the pixel size;
        the shape (z, y, x) for RELION 5 centred coordinates; the tomogram name for formats that do
        not record it; class numbers to names.
    angstrom_optional : read a voxel table of unknown voxel size with NaN Angstrom columns instead
        of refusing it (for uses that need voxels only, such as matching with a voxel tolerance).
    context : everything else known about the table.

    Returns
    -------
    The validated table.
    """
    path = Path(path)
    ctx = _context(context, voxel_size=voxel_size, shape=shape, tomo=tomo, class_names=class_names)
    if not path.exists():
        raise InputError("no such file", path)
    kind = get_format(table_format(path, fmt), path)
    if path.is_dir() and not kind.directory:
        dirs = ", ".join(f.name for f in _REGISTRY.values() if f.directory)
        raise InputError(f"is a directory, not a table file (nor a {dirs} project)", path)
    try:
        try:
            df = kind.read(path, ctx)
        except VoxelSizeNeeded:
            if not angstrom_optional or ctx.voxel_size is not None:
                raise
            df = kind.read(path, replace(ctx, voxel_size=1.0))
            df["x_A"] = df["y_A"] = df["z_A"] = np.nan
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read as a {kind.name} table: {exc}", path) from exc
    return validate_table(df, path, angstrom_optional=angstrom_optional)


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    class_ids: Mapping[str, int] | None = None,
    overwrite: bool = True,
    tilt_series_pixel_size: float | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    context: TableContext | None = None,
) -> Path:
    """Write a table atomically in the format given by ``fmt`` or the suffix of ``path``.

    Parameters
    ----------
    df : a table in the schema.
    path : the output file (or directory, for directory formats).
    fmt : the format's name (default: from the suffix).
    voxel_size, shape, class_ids, tilt_series_pixel_size, shapes : shorthands for the
        :class:`TableContext` fields of the same names (they replace those of ``context``).
    overwrite : replace an existing output.
    context : everything known about the table; each format uses what it needs (STAR: the
        shapes for RELION 5's centred columns, motive lists and Dynamo: class numbers, ...).

    Returns
    -------
    ``path``.
    """
    path = Path(path)
    ctx = _context(context, voxel_size=voxel_size, shape=shape, class_ids=class_ids,
                   tilt_series_pixel_size=tilt_series_pixel_size, shapes=shapes)
    kind = format_of_new(path, fmt)
    df = validate_table(df)
    if kind.directory:
        kind.write(df, path, ctx, target=path, overwrite=overwrite)
        return path
    with atomic_path(path, overwrite=overwrite) as tmp:
        kind.write(df, tmp, ctx, target=path, overwrite=overwrite)
    return path


def read_tables(paths: Sequence[str | os.PathLike], **kwargs: Any) -> pd.DataFrame:
    """Read and concatenate several tables (e.g. one per tomogram)."""
    frames = [read_table(p, **kwargs) for p in paths]
    return validate_table(pd.concat(frames, ignore_index=True)) if frames else empty_table()


def convert_tables(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, fmt: str | None = None,
                   in_format: str | None = None, context: TableContext | None = None,
                   overwrite: bool = True) -> pd.DataFrame:
    """Read ``inputs``, check their coordinates and write them as one table at ``out``.

    Parameters
    ----------
    inputs
        Tables in any registered format (``in_format``, else recognised or from the suffix).
    out
        The output; its format is ``fmt`` or its suffix's.
    context
        What the tables do not record: voxel size (x/y/z are checked against x/y/z_A with it), the
        tomogram shape (particles outside are reported; RELION 5 centred coordinates), the tomogram
        name, class numbers <-> names, the tilt-series pixel size.
    overwrite
        Replace an existing output.

    Returns
    -------
    pandas.DataFrame
        The rows written.
    """
    from deepict_dask.io.table_checks import check_table

    ctx = context or TableContext()
    frames = []
    for path in inputs:
        part = read_table(path, fmt=in_format, voxel_size=ctx.voxel_size, shape=ctx.shape, tomo=ctx.tomo,
                          class_names=ctx.class_names)
        check_table(part, voxel_size=ctx.voxel_size, shape=ctx.shape, path=path)
        frames.append(part)
    df = validate_table(pd.concat(frames, ignore_index=True)) if frames else empty_table()
    write_table(df, out, fmt=fmt, overwrite=overwrite, context=ctx)
    return df


def _context(context: TableContext | None, **given: Any) -> TableContext:
    """``context`` with the keyword shorthands that were given (not None) put in."""
    return replace(context or TableContext(), **{k: v for k, v in given.items() if v is not None})

