"""The clustering methods of the pick stage: one module per method, one registry.

A method is a :class:`~deepict_dask.pick.label.ClusterMethod` (its block functions) plus a pydantic
``Params`` model (a subclass of :class:`MethodParams` whose ``name`` is a one-value ``Literal``) that
declares its settings. Registering it is all it takes: ``PickOptions.method`` looks the name up here,
so the run configuration, the pick stage, ``deepict pick --method NAME`` and the Python API accept it
without edits, and ``deepict pick`` offers a flag for each of its parameters.

Another package adds a method as a plugin, through the ``deepict_dask.pick_methods`` entry-point group
(``mine = "my_package.picking:METHOD"``, a :class:`~deepict_dask.pick.label.ClusterMethod`): loaded on
import, so every CLI call and every Dask worker has it. A method registered only in a script is handed
to the workers of a pipeline run by the run itself (:mod:`deepict_dask.plugins`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepict_dask.options import Options
from deepict_dask.pick.label import ClusterMethod
from deepict_dask.units import Length

__all__ = ["METHODS", "MethodParams", "available_methods", "ensure_methods", "get_method", "register_method",
           "runtime_methods", "unregister_method"]


class MethodParams(Options):
    """The settings of one clustering method; ``name`` selects the method."""

    name: str

    def block_params(self, radius: Length | None) -> dict[str, Any]:
        """The ``params`` the method's block functions get (JSON values, so graphs tokenize stably).

        ``radius`` is the expected particle radius (``PickOptions.radius``), which a method may use
        as a default (watershed and peaks take it as the seed distance).
        """
        return self.model_dump(mode="json", exclude={"name"})


METHODS: dict[str, ClusterMethod] = {}
_SHIPPED: set[str] = set()  # built-in and plugin methods: every process has them


def register_method(method: ClusterMethod) -> None:
    """Make ``method`` available under its name (replacing one of that name)."""
    if method.params is None or "name" not in method.params.model_fields:
        raise TypeError(f"method {method.name!r} must declare a Params model (a MethodParams subclass)")
    METHODS[method.name] = method


def unregister_method(name: str) -> None:
    """Forget the method ``name`` (tests and plugins that register one for a while)."""
    METHODS.pop(name, None)
    _SHIPPED.discard(name)


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> ClusterMethod:
    """The registered method ``name``; ``ValueError`` names the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(available_methods())}") from None


def runtime_methods() -> tuple[ClusterMethod, ...]:
    """Methods registered at run time in this process only (not built in, not a plugin)."""
    return tuple(m for name, m in METHODS.items() if name not in _SHIPPED)


def ensure_methods(methods: Sequence[ClusterMethod]) -> None:
    """On a Dask worker: register the client's run-time methods that this process lacks."""
    for method in methods:
        METHODS.setdefault(method.name, method)


def _load_plugins() -> list[str]:
    from deepict_dask.plugins import PICK_METHODS, load_entry_points

    def register(obj: Any) -> None:
        if isinstance(obj, ClusterMethod) and METHODS.get(obj.name) is not obj:
            register_method(obj)

    return load_entry_points(PICK_METHODS, register)


# the built-in methods register themselves; then installed packages' methods
from deepict_dask.pick.methods import cc, meanshift, peaks, watershed  # noqa: E402, F401

_load_plugins()
_SHIPPED.update(METHODS)
