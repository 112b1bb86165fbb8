"""Backward-compatible name for :mod:`deepict_dask.io.tables` (schema, formats, registry).

New code imports from :mod:`deepict_dask.io.tables`; this module only re-exports it.
"""

from __future__ import annotations

from deepict_dask.io.tables import (  # noqa: F401
    ANGSTROM,
    OPTIONAL,
    REQUIRED,
    VOXEL,
    TableContext,
    TableFormat,
    VoxelSizeNeeded,
    empty_table,
    format_names,
    make_table,
    read_copick_dir,
    read_table,
    read_tables,
    register_format,
    table_format,
    validate_table,
    with_angstrom,
    with_voxels,
    write_copick_dir,
    write_table,
)
from deepict_dask.io.tables.copick import COPICK_CONFIG  # noqa: F401
from deepict_dask.io.tables.schema import voxel_size_from_table as _voxel_size_from_table  # noqa: F401
from deepict_dask.io.tables.star import _ASSUMED_TS_PIXEL  # noqa: F401


def __getattr__(name: str) -> object:
    """``FORMATS``: the registered formats' names now."""
    if name == "FORMATS":
        return format_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
