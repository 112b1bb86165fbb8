"""Run configuration, input checks and the init-config / run commands' bad-input handling."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, InputError, OutputError
from deepict_dask.io import tomogram_name as tomo_name
from deepict_dask.pipeline.config import load_config, parse_config
from deepict_dask.pipeline.example import example_config
from deepict_dask.pipeline.inputs import check_output_dir, collect_inputs, expand_inputs
from deepict_dask.pipeline.manifest import Manifest
from tests.helpers import mrc_file

BASE = """\
inputs:
  paths: ["tomos/*.mrc"]
models:
  - name: m3
    path: demo3d
targets:
  - name: ribosome
    model: m3
    pick:
      threshold: 0.5
"""


def write_mrc(path: Path, voxel_size: float = 10.0, shape=(8, 16, 16)) -> Path:
    return mrc_file(path, np.random.default_rng(0).random(shape, dtype=np.float32), voxel_size)


def test_example_config_validates_and_has_comments(tmp_path):
    text = example_config(inputs="data/*.rec", out="out1", voxel_size=13.48)
    assert text.count("#") > 40
    cfg = parse_config(text, "run.yaml", base_dir=tmp_path)
    assert cfg.inputs.voxel_size == pytest.approx(13.48)
    assert cfg.output.dir == str(tmp_path / "out1")
    assert cfg.inputs.paths == [str(tmp_path / "data/*.rec")]
    assert [t.name for t in cfg.targets] == ["cytosol", "ribosome", "fas", "membrane"]
    assert cfg.targets[1].pick.context.target == "cytosol"
    assert cfg.models[0].path == "demo2d"  # shipped names are not turned into paths


def test_init_config_command(tmp_path, capsys):
    assert main(["init-config", "--inputs", "x/*.mrc", "--run-dir", "o"]) == 0
    out = capsys.readouterr().out
    assert 'paths:\n    - "x/*.mrc"' in out and "dir: o" in out
    target = tmp_path / "run.yaml"
    assert main(["init-config", "-o", str(target)]) == 0
    assert load_config(target).output.dir == str(tmp_path / "deepict_out")
    capsys.readouterr()
    assert main(["init-config", "-o", str(target)]) == 2  # refuses to overwrite
    assert capsys.readouterr().err.strip() == f"deepict init-config: error: {target}: already exists (use --overwrite to replace it)"
    assert main(["init-config", "--out", str(target), "--run-dir", "elsewhere", "--overwrite"]) == 0
    assert load_config(target).output.dir == str(tmp_path / "elsewhere")
    # the old spelling still works, with one warning line; the old meaning of --out is explained
    other = tmp_path / "old.yaml"
    assert main(["init-config", "--output", str(other)]) == 0 and other.is_file()
    assert capsys.readouterr().err.strip() == "deepict init-config: warning: --output is deprecated, use -o/--out"
    assert main(["init-config", "--out", "o"]) == 2
    assert "is now --run-dir" in capsys.readouterr().err and not (Path.cwd() / "o").exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("    pick:\n", "    colour: red\n    pick:\n"),
         "line 9, targets[0].colour: unknown key"),
        (lambda t: t.replace("threshold: 0.5", "threshold: high"), "line 10, targets[0].pick.threshold"),
        (lambda t: t.replace("threshold: 0.5", "threshold: 1.5"), "less than or equal to 1"),
        (lambda t: t.replace("      threshold: 0.5\n", "      threshold: 0.5\n      method: {name: watershed, coarsen: 0}\n"),
         "line 11, targets[0].pick.method.coarsen: must be 'auto' or a whole number >= 1"),
        (lambda t: t.replace("      threshold: 0.5\n", "      threshold: 0.5\n      method: kmeans\n"),
         "line 11, targets[0].pick.method: unknown method 'kmeans'; choose one of cc, meanshift, peaks, watershed"),
        (lambda t: t + "executon:\n  retries: 2\n", "line 11, executon: unknown key"),
        (lambda t: t.replace("model: m3", "model: m4"), "line 8, targets[0].model: model 'm4' is not one of"),
        (lambda t: t.replace("  paths: [\"tomos/*.mrc\"]\n", ""), "line 1, inputs"),
        (lambda t: t + "  - name: ribosome\n    model: m3\n", "duplicate name 'ribosome'"),
        (lambda t: t.replace("      threshold: 0.5\n", "      context: {target: ribosome}\n"),
         "must have 'kind: segmentation'"),
        (lambda t: t.replace("inputs:", "inputs: [").replace("models:", "]models:"), "not valid YAML"),
    ],
)
def test_bad_config_names_key_and_line(edit, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(edit(BASE), "run.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("run.yaml: ")


def test_yaml_is_loaded_safely():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("inputs: !!python/object/apply:os.system ['echo hacked']\n", "run.yaml")


def test_inputs_matching_nothing_and_name_clashes(tmp_path):
    (tmp_path / "run.yaml").write_text(BASE)
    cfg = load_config(tmp_path / "run.yaml")
    with pytest.raises(InputError, match=r"inputs match nothing: .*tomos/\*\.mrc"):
        expand_inputs(cfg)
    write_mrc(tmp_path / "tomos" / "a.mrc")
    write_mrc(tmp_path / "other" / "a.mrc")
    cfg.inputs.paths.append(str(tmp_path / "other" / "a.mrc"))
    with pytest.raises(InputError, match="same tomogram name"):
        expand_inputs(cfg)
    assert tomo_name("x/TS_01.ome.zarr") == "TS_01" and tomo_name("TS_02.rec") == "TS_02"


def test_manifest_file_input(tmp_path):
    write_mrc(tmp_path / "tomos" / "a.mrc")
    write_mrc(tmp_path / "tomos" / "b.mrc")
    (tmp_path / "list.txt").write_text("# my tomograms\ntomos/b.mrc\ntomos/a.mrc\n")
    (tmp_path / "run.yaml").write_text(BASE.replace('  paths: ["tomos/*.mrc"]', "  manifest: list.txt"))
    cfg = load_config(tmp_path / "run.yaml")
    assert [p.name for p in expand_inputs(cfg)] == ["b.mrc", "a.mrc"]


def test_mixed_voxel_sizes_reported_per_file_and_corrupt_kept_as_problem(tmp_path):
    write_mrc(tmp_path / "tomos" / "a.mrc", 10.0)
    write_mrc(tmp_path / "tomos" / "b.mrc", 10.1)
    write_mrc(tmp_path / "tomos" / "c.mrc", 14.0)
    write_mrc(tmp_path / "tomos" / "d.mrc", 20.0)
    (tmp_path / "tomos" / "e.mrc").write_bytes(b"garbage" * 50)
    (tmp_path / "run.yaml").write_text(BASE)
    cfg = load_config(tmp_path / "run.yaml")
    with pytest.raises(InputError) as err:
        collect_inputs(cfg, Manifest(tmp_path / "out"))
    msg = str(err.value)
    assert "c.mrc: 14x14x14 A" in msg and "d.mrc: 20x20x20 A" in msg and "b.mrc" not in msg
    (tmp_path / "tomos" / "c.mrc").unlink()
    (tmp_path / "tomos" / "d.mrc").unlink()
    tomos = collect_inputs(cfg, Manifest(tmp_path / "out"))
    assert [t.name for t in tomos] == ["a", "b", "e"]
    assert tomos[2].problem and "e.mrc" in tomos[2].problem
    assert tomos[0].header["voxel_size"] == [10.0, 10.0, 10.0]


def test_full_disk_is_refused(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(OutputError, match="only 1 MiB free"):
        check_output_dir(tmp_path / "run")


def test_unwritable_output_dir(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def refuse(path, *a, **k):
        if ".write-test-" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(OutputError, match="not writable: Permission denied"):
        check_output_dir(tmp_path / "run")


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="cannot create the output directory"):
        check_output_dir(tmp_path / "f" / "run")


def test_run_command_bad_inputs_exit_2_before_work(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(BASE)
    assert main(["run", str(tmp_path / "run.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "inputs match nothing" in err and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text(BASE + "surprise: 1\n")
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
    assert "line 11, surprise: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "deepict_out" / "tomograms").exists()


def test_unknown_force_stage_and_unknown_class(tmp_path, capsys):
    write_mrc(tmp_path / "tomos" / "a.mrc", 13.48)
    (tmp_path / "run.yaml").write_text(BASE)
    assert main(["run", str(tmp_path / "run.yaml"), "--force", "predcit", "--dry-run"]) == 2
    assert "force (--force) predcit: unknown stage" in capsys.readouterr().err
    from deepict_dask.models import ModelInfo, build_network, save_model

    info = ModelInfo(name="t", dim=3, classes=["ribosome"], patch_size=[16, 16, 16], voxel_size=13.48,
                     architecture={"kind": "UNet3D", "depth": 1, "initial_filters": 2, "batch_norm": False})
    save_model(tmp_path / "t.safetensors", build_network(info), info)
    (tmp_path / "run2.yaml").write_text(
        BASE.replace("    model: m3\n", "    model: m3\n    class: proteasome\n").replace("demo3d", "t.safetensors"))
    assert main(["run", str(tmp_path / "run2.yaml"), "--dry-run"]) == 2
    assert "has no class 'proteasome'" in capsys.readouterr().err


def test_missing_filter_target_is_reported_before_work(tmp_path, capsys):
    write_mrc(tmp_path / "tomos" / "a.mrc", 13.48)
    (tmp_path / "run.yaml").write_text(BASE + "preprocess:\n  filter: {target: nowhere.tsv}\n")
    assert main(["run", str(tmp_path / "run.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "preprocess.filter.target" in err and "nowhere.tsv" in err


def test_run_lock_refuses_a_concurrent_run_and_takes_over_a_stale_one(tmp_path):
    import json
    import socket

    from deepict_dask.pipeline.run import LOCK_NAME, run_lock

    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(OutputError, match=f"another deepict run \\(pid {os.getppid()}\\)"):
        with run_lock(tmp_path):
            pass
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))  # no such process
    with run_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    from deepict_dask.pipeline.run import remove_stale_temporaries

    store = tmp_path / "tomograms" / "a.ome.zarr"
    (store / "labels" / ".ribosome.tmp-1234abcd").mkdir(parents=True)
    (store / "predictions" / "m").mkdir(parents=True)
    (tmp_path / "tables" / "a").mkdir(parents=True)
    (tmp_path / "tables" / "a" / ".ribosome.csv.tmp-99999999").write_text("half")
    assert remove_stale_temporaries(tmp_path, ["a"]) == 2
    assert not (store / "labels" / ".ribosome.tmp-1234abcd").exists()
    assert (store / "predictions" / "m").is_dir()


def _truth_config(tmp_path: Path) -> Path:
    """Two tomograms, a truth pattern (with a wildcard) that finds a table for only one of them."""
    write_mrc(tmp_path / "tomos" / "a.mrc", 13.48)
    write_mrc(tmp_path / "tomos" / "b.mrc", 13.48)
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "a_gt.csv").write_text("x,y,z\n1,2,3\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BASE.replace('  paths: ["tomos/*.mrc"]\n', '  paths: ["tomos/*.mrc"]\n  truth: "truth/{name}_*.csv"\n'))
    return cfg


def test_truth_pattern_matching_nothing_is_warned_in_run(tmp_path, caplog, monkeypatch):
    import logging

    import deepict_dask.pipeline.run as run_mod

    cfg = _truth_config(tmp_path)
    tomos = collect_inputs(load_config(cfg), Manifest(tmp_path / "out"))
    assert {t.name: t.truth for t in tomos} == {"a": tmp_path / "truth" / "a_gt.csv", "b": None}

    def stop(*a, **k):
        raise ConfigError("stopped after the input checks")

    monkeypatch.setattr(run_mod, "check_models", stop)  # the warning must come before any heavy work
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepict_dask"):
        assert main(["run", str(cfg)]) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "inputs.truth" in warnings[0] and "1 of 2 tomograms (b)" in warnings[0]


def test_truth_pattern_matching_nothing_is_warned_in_dry_run(tmp_path):
    import subprocess
    import sys

    cfg = _truth_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "deepict_dask", "run", str(cfg), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "inputs.truth" in ln]
    assert len(lines) == 1 and lines[0].startswith("deepict run: warning: inputs.truth ")
    assert "1 of 2 tomograms (b)" in lines[0] and "2 tomograms" in proc.stdout


def test_header_without_voxel_size_is_refused_unless_the_config_states_it(tmp_path):
    import dask

    from deepict_dask.io import open_volume, voxel_size_of
    from deepict_dask.pipeline.run import make_jobs
    from deepict_dask.pipeline.stages import build_stages

    write_mrc(tmp_path / "tomos" / "a.mrc", 0.0)
    (tmp_path / "run.yaml").write_text(BASE)
    tomos = collect_inputs(load_config(tmp_path / "run.yaml"), Manifest(tmp_path / "out"))
    assert "voxel size is 0" in tomos[0].problem and "set inputs.voxel_size" in tomos[0].problem
    (tmp_path / "run.yaml").write_text(BASE.replace("inputs:\n", "inputs:\n  voxel_size: 13.48\n"))
    config = load_config(tmp_path / "run.yaml")
    tomos = collect_inputs(config, Manifest(tmp_path / "out2"))
    assert tomos[0].problem is None and tomos[0].header["voxel_size"] == [13.48] * 3
    job = make_jobs(tomos, tmp_path / "out2")[0]
    convert = build_stages(config, job)[0]
    with dask.config.set(scheduler="synchronous"):
        convert.func(job, convert.params, {})
    assert voxel_size_of(open_volume(job.store)) == (13.48, 13.48, 13.48)


def test_changed_config_voxel_size_reaches_a_cached_header_without_one(tmp_path):
    """A header cached with the config's voxel size is re-read when inputs.voxel_size changes."""
    from deepict_dask.pipeline.run import _save_headers

    write_mrc(tmp_path / "tomos" / "a.mrc", 0.0)
    manifest = Manifest(tmp_path / "out")
    (tmp_path / "run.yaml").write_text(BASE.replace("inputs:\n", "inputs:\n  voxel_size: 13.48\n"))
    tomos = collect_inputs(load_config(tmp_path / "run.yaml"), manifest)
    _save_headers(manifest, tomos)
    (tmp_path / "run.yaml").write_text(BASE.replace("inputs:\n", "inputs:\n  voxel_size: 10.0\n"))
    tomos = collect_inputs(load_config(tmp_path / "run.yaml"), manifest)
    assert tomos[0].problem is None and tomos[0].header["voxel_size"] == [10.0] * 3
