"""io.tables registry: a new table format is one module that registers itself, and then
``deepict table``, ``output.table_formats`` and the run-wide tables of ``deepict run`` know it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cloudpickle
import distributed
import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, InputError
from deepict_dask.io.tables import (
    TableContext,
    TableFormat,
    VoxelSizeNeeded,
    format_names,
    make_table,
    read_table,
    register_format,
    table_format,
    unregister_format,
    write_table,
)
from deepict_dask.pipeline.config import parse_config

# the toy format below lives in a test module that worker processes cannot import by name; what a user
# registers in a script or notebook (``__main__``) travels by value the same way
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------------- a toy format, as a user writes one
def _read_xyz(path: Path, ctx: TableContext) -> pd.DataFrame:
    """``tomo class x y z`` per line, voxels; the voxel size comes from the context."""
    if ctx.voxel_size is None:
        raise VoxelSizeNeeded("xyz files record no voxel size", path)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    xyz = np.array([[float(v) for v in r[2:5]] for r in rows]).reshape(-1, 3)
    return make_table([r[0] for r in rows], [r[1] for r in rows], xyz=xyz, voxel_size=ctx.voxel_size)


def _write_xyz(df: pd.DataFrame, out: Path, ctx: TableContext, *, target: Path, overwrite: bool) -> None:
    out.write_text("".join(f"{r.tomo} {r._2} {r.x!r} {r.y!r} {r.z!r}\n" for r in df.itertuples()))


@pytest.fixture
def xyz_format():
    fmt = register_format(TableFormat(name="xyz", suffixes=(".xyz",), read=_read_xyz, write=_write_xyz,
                                      uses=frozenset({"voxel_size"})))
    yield fmt
    unregister_format("xyz")


def _table() -> pd.DataFrame:
    return make_table(["a", "a", "b"], ["ribosome", "fas", "ribosome"], xyz=[[1.5, 2.0, 3.0], [4.0, 5.0, 6.25], [7, 8, 9]],
                      voxel_size=10.0, score=[0.5, 0.25, 1.0])


def test_registered_format_is_read_written_and_told_by_suffix(tmp_path, xyz_format):
    assert "xyz" in format_names()
    path = write_table(_table(), tmp_path / "t.xyz")
    assert path.read_text().splitlines()[0] == "a ribosome 1.5 2.0 3.0"
    assert table_format(path) == "xyz"
    back = read_table(path, voxel_size=10.0)
    np.testing.assert_array_equal(back[["x", "y", "z", "x_A"]].to_numpy(), _table()[["x", "y", "z", "x_A"]].to_numpy())
    with pytest.raises(InputError, match="give the voxel size|no voxel size"):
        read_table(path)


def test_registering_twice_or_with_unknown_context_is_refused(xyz_format):
    with pytest.raises(ValueError, match="already registered"):
        register_format(xyz_format)
    with pytest.raises(ValueError, match="unknown context fields"):
        register_format(TableFormat(name="bad", suffixes=(".bad",), read=_read_xyz, write=_write_xyz,
                                    uses=frozenset({"colour"})))
    assert "bad" not in format_names()


def test_unregistered_format_is_gone(tmp_path):
    assert "xyz" not in format_names()
    with pytest.raises(InputError, match=r"suffix '\.xyz'.*\.csv, \.star"):
        write_table(_table(), tmp_path / "t.xyz")


def test_deepict_table_converts_to_a_registered_format(tmp_path, xyz_format, capsys):
    src = write_table(_table(), tmp_path / "in.csv")
    assert main(["table", str(src), "-o", str(tmp_path / "out.xyz")]) == 0
    assert (tmp_path / "out.xyz").read_text().count("\n") == 3
    assert main(["table", str(src), "-o", str(tmp_path / "out.txt2"), "--format", "xyz"]) == 0
    assert (tmp_path / "out.txt2").read_text() == (tmp_path / "out.xyz").read_text()
    # and back, with the voxel size the toy format needs
    assert main(["table", str(tmp_path / "out.xyz"), "-o", str(tmp_path / "back.csv"), "--voxel-size", "10"]) == 0
    assert pd.read_csv(tmp_path / "back.csv")["x_A"].tolist() == [15.0, 40.0, 70.0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["table", "--help"])
    assert "xyz (.xyz)" in capsys.readouterr().out


def test_deepict_table_format_choices_come_from_the_registry(tmp_path, capsys):
    src = write_table(_table(), tmp_path / "in.csv")
    with pytest.raises(SystemExit):
        main(["table", str(src), "-o", str(tmp_path / "o.xyz"), "--format", "xyz"])
    err = capsys.readouterr().err
    assert "invalid choice: 'xyz'" in err and "'copick'" in err and "'tbl'" in err


def test_deepict_table_warns_for_what_the_format_wants(tmp_path, caplog):
    src = write_table(_table(), tmp_path / "in.csv")
    with caplog.at_level("WARNING"):
        assert main(["table", str(src), "-o", str(tmp_path / "o.star")]) == 0
    assert "no --shape, so the STAR file has no rlnCenteredCoordinateX/Y/ZAngst columns" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["table", str(src), "-o", str(tmp_path / "p.star"), "--shape", "20", "30", "40"]) == 0
    assert "no --shape" not in caplog.text


# ------------------------------------------------------------------------- output.table_formats
CONFIG = """\
inputs: {{paths: ["tomos/*.mrc"]}}
output: {{dir: run, chunks: 32, levels: 1, report: false, table_formats: {formats}}}
models: [{{name: m3, path: tiny3d.safetensors, predict: {{window: 16, margin: 2}}}}]
targets:
  - {{name: ribosome, model: m3, pick: {{threshold: 0.3}}}}
  - {{name: fas, model: m3, pick: {{threshold: 0.3}}}}
"""


def test_config_table_formats_are_checked_against_the_registry(xyz_format):
    assert parse_config(CONFIG.format(formats="[csv, xyz]")).output.table_formats == ["csv", "xyz"]
    assert parse_config(CONFIG.format(formats="[csv, star]")).output.table_formats == ["csv", "star"]
    with pytest.raises(ConfigError, match=r"output\.table_formats.*unknown table format\(s\) \['parquet'\]; "
                                          r"the formats are csv, star, json, copick, ndjson, motl, tbl, xyz"):
        parse_config(CONFIG.format(formats="[csv, parquet]"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One small tomogram and an untrained 3D model whose probabilities give a few particles per class."""
    from deepict_dask.models import ModelInfo, build_network, save_model

    root = tmp_path_factory.mktemp("project")
    (root / "tomos").mkdir()
    with mrcfile.new(root / "tomos" / "t0.mrc") as m:
        m.set_data(np.random.default_rng(1).normal(size=(20, 32, 32)).astype(np.float32))
        m.voxel_size = 10.0
    torch.manual_seed(0)
    info = ModelInfo(name="tiny3d", dim=3, classes=["ribosome", "fas", "membrane"], patch_size=[16, 16, 16],
                     architecture={"kind": "UNet3D", "depth": 1, "initial_filters": 2, "batch_norm": False},
                     voxel_size=10.0)
    save_model(root / "tiny3d.safetensors", build_network(info), info)
    return root


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def _run(project: Path, client, formats: str, out: str) -> Path:
    cfg = project / f"{out}.yaml"
    cfg.write_text(CONFIG.format(formats=formats).replace("dir: run", f"dir: {out}"))
    assert main(["run", str(cfg), "--scheduler", client.scheduler.address, "--no-progress"]) == 0
    return project / out


def test_run_writes_every_requested_format_per_tomogram_and_run_wide(project, client, xyz_format):
    run = _run(project, client, "[csv, xyz]", "run_xyz")
    csv = pd.read_csv(run / "particles.csv")
    assert len(csv) > 0 and set(csv["class"]) == {"ribosome", "fas"}
    for path in (run / "particles.xyz", run / "tables" / "t0" / "t0_particles.xyz"):
        back = read_table(path, voxel_size=10.0)
        np.testing.assert_array_equal(back[["x", "y", "z"]].to_numpy(), csv[["x", "y", "z"]].to_numpy())
        assert back["class"].tolist() == csv["class"].tolist()
    assert not (run / "particles.star").exists()  # not asked for


def test_run_hands_a_format_registered_only_here_to_worker_processes(project, xyz_format):
    """A real worker process imports the package afresh and knows only the shipped formats; the run
    gives its stages the formats this process registered, so per-tomogram tables are written there."""
    from deepict_dask.io.tables import runtime_formats

    assert [f.name for f in runtime_formats()] == ["xyz"]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert "xyz" not in client.run(format_names)[next(iter(client.scheduler_info()["workers"]))]
        run = _run(project, client, "[csv, xyz]", "run_xyz_processes")
    per_tomo = read_table(run / "tables" / "t0" / "t0_particles.xyz", voxel_size=10.0)
    assert len(per_tomo) == len(pd.read_csv(run / "particles.csv")) > 0


PLUGIN = """\
from deepict_dask.io.tables import TableFormat

def _read(path, ctx):
    raise NotImplementedError

def _write(df, out, ctx, *, target, overwrite):
    out.write_text(str(len(df)))

FORMAT = TableFormat(name="plug", suffixes=(".plug",), read=_read, write=_write, description="a plugin's format")
"""


def _plugin_site(root: Path, value: str, name: str = "plug") -> Path:
    """A directory that looks like an installed distribution declaring one table-format entry point."""
    (root / "plug_tables.py").write_text(PLUGIN)
    info = root / "plug_tables-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-tables\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[deepict_dask.table_formats]\n{name} = {value}\n")
    return root


def _fresh_process(site: Path, code: str) -> subprocess.CompletedProcess:
    """A new interpreter (as a CLI call or a ``dask worker`` is) with ``site`` on its path."""
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_an_installed_plugin_format_is_known_in_every_new_process(tmp_path):
    site = _plugin_site(tmp_path, "plug_tables:FORMAT")
    code = ("from deepict_dask.io.tables import format_names, runtime_formats, write_table, make_table\n"
            f"p = write_table(make_table(['a'], ['r'], xyz=[[1, 2, 3]], voxel_size=1.0), {str(tmp_path / 'o.plug')!r})\n"
            "print(format_names()[-1], [f.name for f in runtime_formats()], p.read_text())")
    res = _fresh_process(site, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["plug", "[]", "1"]  # registered, shipped (not handed to workers), written


def test_a_real_dask_worker_process_writes_a_plugin_format(tmp_path):
    """``dask worker`` started from its command line (as a cluster profile starts it) with the plugin
    installed: a table task submitted to it writes the plugin's format, though this process never saw it."""
    import os
    import signal
    import time

    site = _plugin_site(tmp_path, "plug_tables:FORMAT")
    assert "plug" not in format_names()
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                 "--nthreads", "1", "--no-dashboard"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not client.scheduler_info()["workers"]:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
                time.sleep(0.2)
            out = tmp_path / "picks.plug"
            fut = client.submit(write_table, make_table(["a", "b"], ["r", "r"], xyz=[[1, 2, 3], [4, 5, 6]],
                                                       voxel_size=1.0), str(out), fmt="plug")
            assert Path(fut.result(timeout=60)).read_text() == "2"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_a_broken_plugin_is_left_out_with_a_warning_naming_it(tmp_path):
    site = _plugin_site(tmp_path, "plug_tables:NO_SUCH_THING", name="broken")
    res = _fresh_process(site, "from deepict_dask.io.tables import format_names; print(format_names())")
    assert res.returncode == 0, res.stderr
    assert "'csv'" in res.stdout and "plug" not in res.stdout
    assert "deepict_dask.table_formats plugin 'broken' (plug_tables:NO_SUCH_THING) was not loaded" in res.stderr


def test_run_with_copick_json_and_motl_formats(project, client):
    run = _run(project, client, "[star, json, copick, motl]", "run_copick")
    csv = read_table(run / "particles.csv")  # always written: the evaluation and report read it
    # copick: a project for the whole run, none per tomogram
    picks = read_table(run / "particles_copick")
    assert sorted(picks["class"]) == sorted(csv["class"])
    config = json.loads((run / "particles_copick" / "copick_config.json").read_text())
    assert {o["name"] for o in config["pickable_objects"]} == {"ribosome", "fas"}
    # a copick point file holds one class of one tomogram: one per target, per tomogram only
    tomo = run / "tables" / "t0"
    for target in ("ribosome", "fas"):
        part = read_table(tomo / f"t0_{target}.json")
        assert len(part) == (csv["class"] == target).sum()
    assert not (run / "particles.json").exists()
    # a motive list holds one tomogram: per tomogram only
    assert len(read_table(tomo / "t0_particles.motl", voxel_size=10.0)) == len(csv)
    assert not (run / "particles.motl").exists()
    # STAR without csv asked for: per tomogram and run-wide, no per-tomogram csv
    assert len(read_table(run / "particles.star")) == len(csv)
    assert (tomo / "t0_particles.star").exists() and not (tomo / "t0_particles.csv").exists()


def test_unknown_format_name_is_one_error_listing_the_formats(tmp_path):
    with pytest.raises(InputError, match=r"unknown table format 'nope'; choose one of \['csv', 'star'"):
        write_table(_table(), tmp_path / "t.csv", fmt="nope")
    with pytest.raises(InputError, match="unknown table format 'nope'"):
        read_table(write_table(_table(), tmp_path / "t.csv"), fmt="nope")


def test_a_failing_writer_leaves_no_output(tmp_path):
    def half_then_fail(df, out, ctx, *, target, overwrite):
        out.write_text("half a table")
        raise InputError("cannot store this", target)

    register_format(TableFormat(name="broken", suffixes=(".broken",), read=_read_xyz, write=half_then_fail))
    try:
        with pytest.raises(InputError, match="cannot store this"):
            write_table(_table(), tmp_path / "t.broken")
    finally:
        unregister_format("broken")
    assert list(tmp_path.iterdir()) == []


def test_convert_tables_reads_checks_and_writes_one_table(tmp_path, xyz_format):
    from deepict_dask.io.tables.registry import convert_tables, format_of_new, missing_context

    a = write_table(_table(), tmp_path / "a.csv")
    b = write_table(_table().assign(tomo="c"), tmp_path / "b.xyz")
    ctx = TableContext(voxel_size=10.0, class_ids={"ribosome": 1, "fas": 2})
    df = convert_tables([a, b], tmp_path / "all.xyz", context=ctx)
    assert len(df) == 6 and sorted(set(df["tomo"])) == ["a", "b", "c"]
    back = read_table(tmp_path / "all.xyz", voxel_size=10.0)
    np.testing.assert_array_equal(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy())
    with pytest.raises(InputError, match="xyz files record no voxel size"):  # the reader's need is named
        convert_tables([b], tmp_path / "no.csv")
    assert not (tmp_path / "no.csv").exists()
    with pytest.raises(InputError, match="disagree by 10.0x"):  # checked against the context's voxel size
        convert_tables([a], tmp_path / "wrong.csv", context=TableContext(voxel_size=1.0))
    assert format_of_new(tmp_path / "x.star").name == "star"
    assert format_of_new(tmp_path / "x.txt", "xyz") is xyz_format
    star = format_of_new(tmp_path / "x.star")
    assert set(missing_context(star, TableContext())) == set(star.wants)
    assert "shape" not in missing_context(star, TableContext(shape=(10, 10, 10)))
