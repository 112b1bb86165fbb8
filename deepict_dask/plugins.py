"""Extensions from outside the package: installed plugins, and what a script registered at run time.

Two registries take extensions: table formats (:mod:`deepict_dask.io.tables`) and clustering methods
(:mod:`deepict_dask.pick.methods`). A registry filled by calls in one process is empty in every other,
and a Dask worker is another process. So:

- an installed package declares its extensions as entry points (groups :data:`TABLE_FORMATS` and
  :data:`PICK_METHODS`); each registry loads them when it is imported, in every process;
- what a script or notebook registers at run time exists in that process only; ``deepict run`` hands
  it to its workers with each stage (:func:`runtime_extensions`, :func:`install_extensions`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TABLE_FORMATS = "deepict_dask.table_formats"
PICK_METHODS = "deepict_dask.pick_methods"


def load_entry_points(group: str, register: Callable[[Any], None]) -> list[str]:
    """Load every entry point of ``group`` and give what it names to ``register``; returns their names.

    The entry point names an object (``my_package.tables:FORMAT``) or a module that registers what it
    defines on import (``my_package.tables``; ``register`` then gets the module and ignores it). One
    that fails to load is left out with a warning naming it: a broken plugin must not break the rest.
    """
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=group):
        try:
            register(ep.load())
            loaded.append(ep.name)
        except Exception as exc:
            warnings.warn(f"{group} plugin {ep.name!r} ({ep.value}) was not loaded: {type(exc).__name__}: {exc}",
                          RuntimeWarning, stacklevel=2)
    return loaded


def runtime_extensions() -> dict[str, tuple[Any, ...]]:
    """The table formats and clustering methods registered at run time in this process (not built in,
    not plugins): what a Dask worker process lacks. Empty when there are none."""
    from deepict_dask.io.tables import runtime_formats
    from deepict_dask.pick.methods import runtime_methods

    found = {"formats": runtime_formats(), "methods": runtime_methods()}
    return {kind: items for kind, items in found.items() if items}


def install_extensions(extensions: Mapping[str, Sequence[Any]]) -> None:
    """In a worker: register the client's run-time extensions this process does not have."""
    if extensions.get("formats"):
        from deepict_dask.io.tables import ensure_formats

        ensure_formats(extensions["formats"])
    if extensions.get("methods"):
        from deepict_dask.pick.methods import ensure_methods

        ensure_methods(extensions["methods"])
