"""Every subpackage lists its public API in ``__all__``; every listed name resolves to the object
itself (not to a module of the same name), and light imports stay free of torch."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import deepict_dask

ROOT = Path(deepict_dask.__file__).parent
# the command-line package has no API of its own; mine/ is listed by its own helper
PACKAGES = sorted(
    "deepict_dask." + ".".join(p.relative_to(ROOT).parent.parts)
    for p in ROOT.rglob("__init__.py")
    if p.parent != ROOT and p.relative_to(ROOT).parts[0] != "cli"
)


def test_the_packages_are_found():
    assert {"deepict_dask.pick", "deepict_dask.evaluate", "deepict_dask.train", "deepict_dask.io.tables",
            "deepict_dask.pick.methods"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_resolves(name: str):
    package = importlib.import_module(name)
    assert isinstance(getattr(package, "__all__", None), list | tuple), f"{name} has no __all__"
    assert package.__all__, f"{name}.__all__ is empty"
    assert len(set(package.__all__)) == len(package.__all__), f"{name}.__all__ lists a name twice"
    # import every submodule first: a submodule imported later must not take the place of a
    # function of the same name (evaluate.sweep / evaluate.tune, io.convert, preprocess.normalize)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{name}.{info.name}")
    for attr in package.__all__:
        value = getattr(package, attr)
        assert not isinstance(value, ModuleType), f"{name}.{attr} is a module, not the public object"
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # noqa: S102  (the star import honours __all__)
    assert set(package.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error():
    import deepict_dask.pick

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deepict_dask.pick.nope  # noqa: B018


def test_the_options_models_and_entry_points_are_public():
    from deepict_dask.evaluate import evaluate_picks, sweep, tune
    from deepict_dask.inference import PredictOptions, predict_file, predict_many, predict_volume
    from deepict_dask.io import ConvertOptions, convert
    from deepict_dask.io.tables import read_table, write_table
    from deepict_dask.pick import PickOptions, pick
    from deepict_dask.pipeline import run_workflow
    from deepict_dask.preprocess import FilterOptions, apply_filter
    from deepict_dask.train import train

    assert PickOptions.__module__ == "deepict_dask.pick.options"
    assert PredictOptions.__module__ == "deepict_dask.inference.options"
    assert FilterOptions.__module__ == "deepict_dask.preprocess.options"
    assert ConvertOptions.__module__ == "deepict_dask.io.convert"
    for fn in (evaluate_picks, sweep, tune, predict_file, predict_many, predict_volume, convert, read_table,
               write_table, pick, run_workflow, apply_filter, train):
        assert callable(fn) and not isinstance(fn, ModuleType)


def test_light_imports_do_not_import_torch():
    code = ("import sys\n"
            "import deepict_dask.pick, deepict_dask.pick.options, deepict_dask.inference, deepict_dask.train,\\\n"
            "    deepict_dask.train.config, deepict_dask.train.labels, deepict_dask.pipeline.config, deepict_dask.evaluate,\\\n"
            "    deepict_dask.cli.main\n"
            "from deepict_dask.pick import PickOptions\n"
            "from deepict_dask.inference import PredictOptions\n"
            "print(sorted(m for m in ('torch', 'distributed', 'deepict_dask.pick.api') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
