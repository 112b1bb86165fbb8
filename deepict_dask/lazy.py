"""Package namespaces whose names are imported on first use.

A package ``__init__`` that imported its modules eagerly would make every light command pay for
them: ``import deepict_dask.pick.options`` runs ``deepict_dask/pick/__init__.py`` first, and a
``deepict_dask.train`` that imported its training loop would pull in torch for ``deepict labels``.
With :func:`lazy_namespace` a package lists where each public name lives; the module holding it is
imported when the name is first read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_namespace(package: str, where: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``__all__`` and a module ``__getattr__`` that imports each name from its submodule on first use.

    Parameters
    ----------
    package
        The package's ``__name__``.
    where
        Public name -> the submodule (relative to ``package``) that defines it.

    Returns
    -------
    tuple
        The sorted names (the package's ``__all__``) and the ``__getattr__`` function (PEP 562) to
        assign in the package; a name read once is cached in the package's namespace.
    """

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return sorted(where), __getattr__
