"""Coordinate tables: one in-memory schema (:mod:`.schema`), one module per file format, one registry.

Built-in formats (chosen by suffix, by what an existing path looks like, or by ``fmt=``):

========== ======================================================================================
``csv``    the schema with a header row (the project's own format); ``.csv``, ``.txt``.
``star``   RELION tomography STAR (:mod:`.star`).
``json``   copick point set: Angstrom, one class of one tomogram per file (:mod:`.copick`).
``copick`` a copick project directory, any number of classes and tomograms (:mod:`.copick`).
``ndjson`` CryoET Data Portal points, voxels, one tomogram per file (:mod:`.ndjson`).
``motl``   DeePiCt / TOM motive list, one tomogram per file (:mod:`.motl`).
``tbl``    Dynamo table (:mod:`.dynamo`).
========== ======================================================================================

A new format is one module that builds a :class:`TableFormat` and calls :func:`register_format`
(imported once, e.g. from here for a built-in one); readers, writers, ``deepict table --format``
and ``output.table_formats`` know it from then on. Another package adds one as a plugin, through the
``deepict_dask.table_formats`` entry-point group (:func:`load_plugin_formats`): loaded on import, so
every CLI call and every Dask worker has it. A format registered only in a script is handed to the
workers of a pipeline run by the run itself. Orientations (``phi, theta, psi``) are converted
at each format's boundary (:mod:`deepict_dask.io.orientation`). All writers are atomic; all readers
give one clear :class:`~deepict_dask.errors.InputError` naming the file on bad input.
"""

from __future__ import annotations

from deepict_dask.io.tables.registry import (
    TableContext,
    TableFormat,
    ensure_formats,
    format_names,
    get_format,
    load_plugin_formats,
    mark_shipped,
    read_table,
    read_tables,
    register_format,
    runtime_formats,
    suffix_format,
    table_format,
    unregister_format,
    write_table,
)
from deepict_dask.io.tables.schema import (
    ANGSTROM,
    OPTIONAL,
    REQUIRED,
    VOXEL,
    VoxelSizeNeeded,
    concat_tables,
    empty_table,
    make_table,
    validate_table,
    voxel_size_from_table,
    with_angstrom,
    with_voxels,
)

# the built-in formats register themselves on import, in the order the suffix look-up tries them
from deepict_dask.io.tables import csv, star, copick, ndjson, motl, dynamo  # noqa: E402, F401, I001  isort: skip
from deepict_dask.io.tables.copick import read_copick_dir, write_copick_dir  # noqa: E402

load_plugin_formats()  # installed packages' formats, in every process that imports this package
mark_shipped()

__all__ = [
    "ANGSTROM", "OPTIONAL", "REQUIRED", "VOXEL", "TableContext", "TableFormat", "VoxelSizeNeeded",
    "concat_tables", "empty_table", "ensure_formats", "format_names", "get_format", "load_plugin_formats", "make_table", "read_copick_dir", "read_table", "read_tables",
    "register_format", "runtime_formats", "suffix_format", "table_format", "unregister_format", "validate_table",
    "voxel_size_from_table", "with_angstrom", "with_voxels", "write_copick_dir", "write_table",
]


def __getattr__(name: str) -> object:
    """``FORMATS``: the registered formats' names now (a format registered later is in it)."""
    if name == "FORMATS":
        return format_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
