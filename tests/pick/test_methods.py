"""A clustering method registered from outside the package reaches the API, ``deepict pick`` and
``deepict run`` without edits to the config, the stage or the CLI."""

from __future__ import annotations

import sys
from typing import Literal

import cloudpickle
import distributed
import mrcfile
import numpy as np
import pytest
from pydantic import Field

from deepict_dask.cli.main import main
from deepict_dask.io.coords import read_table
from deepict_dask.io.volume import make_volume
from deepict_dask.pick.api import pick
from deepict_dask.pick.label import ClusterMethod
from deepict_dask.pick.methods import METHODS, MethodParams, register_method, unregister_method
from deepict_dask.pick.options import PickOptions

# worker processes cannot import this test module by name; a script's (``__main__``) code travels by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ToyParams(MethodParams):
    """Every foreground voxel whose z + y + x is a multiple of ``stride`` is a cluster of its own."""

    name: Literal["toy"] = "toy"
    stride: int = Field(1, ge=1, description="keep voxels whose z + y + x is a multiple of this")


def toy_label_block(fg, prob, votes, ctx):
    core = fg[ctx.core]
    z, y, x = np.indices(core.shape) + np.asarray(ctx.origin).reshape(3, 1, 1, 1)
    chosen = core & ((z + y + x) % ctx.params["stride"] == 0)
    labels = np.zeros(core.shape, np.uint32)
    labels[chosen] = np.arange(1, int(chosen.sum()) + 1, dtype=np.uint32)
    return labels, None  # keys: the block's fixed offset + local label, unique over the volume


@pytest.fixture
def toy():
    register_method(ClusterMethod("toy", toy_label_block, merge_touching=False, params=ToyParams))
    yield
    unregister_method("toy")


def _line() -> np.ndarray:
    vol = np.zeros((4, 4, 12), np.float32)
    vol[1, 1, 2:8] = 0.9  # one connected line of six voxels: x = 2..7, z + y + x = 4..9
    return vol


def test_toy_method_through_the_api(toy):
    v = make_volume(_line(), 10.0, chunks=(4, 4, 5))
    assert len(pick(v, PickOptions(threshold=0.5)).table) == 1  # cc: one cluster
    table = pick(v, PickOptions(threshold=0.5, method="toy")).table
    assert sorted(table["x"]) == [2, 3, 4, 5, 6, 7] and set(table["size"]) == {1}
    table = pick(v, PickOptions(threshold=0.5, method={"name": "toy", "stride": 3})).table
    assert sorted(table["x"]) == [4, 7]  # z + y + x = 6 and 9


def test_unregistered_method_is_refused(toy):
    unregister_method("toy")
    with pytest.raises(ValueError, match="unknown method 'toy'"):
        PickOptions(method="toy")


def test_toy_method_through_deepict_pick(toy, tmp_path, monkeypatch, capsys):
    import contextlib

    import deepict_dask.cluster

    monkeypatch.setattr(deepict_dask.cluster, "dask_client", lambda *a, **k: contextlib.nullcontext())
    path = tmp_path / "map.mrc"
    with mrcfile.new(path) as m:
        m.set_data(_line())
        m.voxel_size = 10.0
    out = tmp_path / "picks.csv"
    base = ["pick", str(path), "--out", str(out), "--no-progress", "--overwrite", "--method", "toy"]
    assert main(base + ["--stride", "3"]) == 0  # a flag made from the Params field
    assert sorted(read_table(out)["x"]) == [4, 7]
    assert main(base + ["--param", "stride=2"]) == 0
    assert sorted(read_table(out)["x"]) == [2, 4, 6]
    assert main(base + ["--stride", "0"]) == 2
    assert "--stride (method.stride): Input should be greater than or equal to 1" in capsys.readouterr().err


RUN_YAML = """\
schema_version: 2
inputs: {paths: [t0.mrc]}
output: {dir: run, chunks: 32, levels: 1, report: false, table_formats: [csv]}
preprocess: {normalize: false, filter: {enabled: false}}
models:
  - {name: m3, path: tiny3d.safetensors, patch: 16, overlap: 2}
targets:
  - name: ribosome
    model: m3
    pick: {threshold: 0.01, method: {name: toy, stride: 40}}
"""


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "worker-process"])
def test_toy_method_through_deepict_run(toy, tmp_path, processes):
    """Registered in this process only: a worker process (which imports the package afresh) gets it
    from the run with each stage."""
    import torch

    from deepict_dask.models import ModelInfo, build_network, save_model
    from deepict_dask.pick.methods import runtime_methods

    assert [m.name for m in runtime_methods()] == ["toy"]

    torch.manual_seed(0)
    info = ModelInfo(name="tiny3d", dim=3, classes=["ribosome"], patch_size=[16, 16, 16],
                     architecture={"kind": "UNet3D", "depth": 1, "initial_filters": 2, "batch_norm": False},
                     voxel_size=10.0)
    save_model(tmp_path / "tiny3d.safetensors", build_network(info), info)
    with mrcfile.new(tmp_path / "t0.mrc") as m:
        m.set_data(np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32))
        m.voxel_size = 10.0
    (tmp_path / "run.yaml").write_text(RUN_YAML)
    with distributed.Client(processes=processes, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        assert main(["run", str(tmp_path / "run.yaml"), "--scheduler", client.scheduler.address,
                     "--no-progress"]) == 0
    table = read_table(tmp_path / "run" / "tables" / "t0" / "ribosome.csv")
    assert len(table) > 1 and set(table["size"]) == {1}
    assert ((table["x"] + table["y"] + table["z"]) % 40 == 0).all()
    assert "toy" in METHODS


PLUGIN = """\
import numpy as np
from typing import Literal
from deepict_dask.pick.label import ClusterMethod
from deepict_dask.pick.methods import MethodParams

class Params(MethodParams):
    name: Literal["plugged"] = "plugged"

def label_block(fg, prob, votes, ctx):
    raise NotImplementedError

METHOD = ClusterMethod("plugged", label_block, merge_touching=False, params=Params)
"""


def test_an_installed_plugin_method_is_known_in_every_new_process(tmp_path):
    """A package declaring a ``deepict_dask.pick_methods`` entry point: a new interpreter (a CLI call,
    a ``dask worker``) has its method, as a shipped one (not handed to workers by a run)."""
    import os
    import subprocess

    (tmp_path / "plugged.py").write_text(PLUGIN)
    info = tmp_path / "plugged-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugged\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[deepict_dask.pick_methods]\nplugged = plugged:METHOD\n")
    code = ("from deepict_dask.pick.methods import available_methods, runtime_methods\n"
            "from deepict_dask.pick.options import PickOptions\n"
            "print('plugged' in available_methods(), runtime_methods(), PickOptions(method='plugged').method.name)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "()", "plugged"]
