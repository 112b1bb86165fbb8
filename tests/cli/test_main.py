"""The ``deepict`` shell: help for every command, version, clean errors, table conversion."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepict_dask import __version__
from deepict_dask.cli.main import build_parser, main
from deepict_dask.io.coords import make_table, read_table, write_table
from tests.helpers import mrc_file


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "deepict_dask", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in _commands():
        assert cmd in out


@pytest.mark.parametrize("command", _commands())
def test_every_command_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help" and action.help != argparse.SUPPRESS:
            assert action.help, f"deepict {command} {action.option_strings[0]} has no help text"
            assert action.option_strings[-1] in text


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_table_convert_star_to_motl_and_back(tmp_path, capsys):
    df = make_table("t1", ["ribosome", "fas"], zyx=[[1, 2, 3], [4, 5, 6]], voxel_size=10.0, score=[0.5, 0.7])
    write_table(df, tmp_path / "in.star")
    assert main(["table", str(tmp_path / "in.star"), "--out", str(tmp_path / "m.csv"), "--format", "motl",
                 "--class-map", "1=fas", "2=ribosome"]) == 0
    assert main(["table", str(tmp_path / "m.csv"), "--out", str(tmp_path / "back.csv"), "--voxel-size", "10",
                 "--tomo", "t1", "--class-map", "1=fas", "2=ribosome"]) == 0
    back = read_table(tmp_path / "back.csv")
    assert list(back["class"]) == ["ribosome", "fas"]
    assert back[["x", "y", "z"]].to_numpy().tolist() == [[3, 2, 1], [6, 5, 4]]


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deepict_dask", "table", str(tmp_path / "missing.star"), "--out", str(tmp_path / "o.csv")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "missing.star" in proc.stderr and "no such file" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_bad_class_map(tmp_path, capsys):
    write_table(make_table("t", "r", zyx=[[1, 1, 1]], voxel_size=1.0), tmp_path / "a.csv")
    assert main(["table", str(tmp_path / "a.csv"), "--out", str(tmp_path / "b.csv"), "--class-map", "one=r"]) == 2
    assert "class-map" in capsys.readouterr().err


def _options(command: str) -> dict[str, argparse.Action]:
    """Visible option strings of ``command`` (deprecated aliases are hidden)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {o: a for a in sub._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


# commands that write an output they name with -o/--out; run and demo resume into a run directory instead
WRITERS = ["convert", "filter", "init-config", "labels", "pick", "predict", "report", "simulate", "spectrum", "table"]
PROGRESS = ["convert", "demo", "filter", "pick", "predict", "run", "spectrum", "train"]


@pytest.mark.parametrize("command", _commands())
def test_one_vocabulary_across_commands(command):
    """-o/--out is the output, --overwrite replaces it, --chunks is the chunk edge, --no-progress everywhere."""
    opts = _options(command)
    if "--out" in opts:
        assert opts["--out"] is opts.get("-o"), f"deepict {command}: --out without -o"
    if "-o" in opts:
        assert "--out" in opts["-o"].option_strings
    if command in WRITERS:
        assert "--overwrite" in opts and "--out" in opts
    if command in PROGRESS:
        assert "--no-progress" in opts
    assert "--chunk" not in opts and "--output" not in opts
    assert "--force" not in opts or command in ("run", "demo")


def test_old_spellings_still_work_with_one_warning(capsys):
    args = build_parser().parse_args(["pick", "m.mrc", "-o", "o.csv", "--chunk", "32"])
    assert args.chunks == 32 and args.out == "o.csv"
    assert capsys.readouterr().err.strip() == "deepict pick: warning: --chunk is deprecated, use --chunks"
    assert build_parser().parse_args(["predict", "t.mrc", "--model", "m", "-o", "d"]).chunks == 256


def test_progress_never_reaches_stdout_and_shows_on_a_terminal(tmp_path):
    """A real run with stdout a pipe and stderr a terminal: the bar is drawn on stderr only."""
    import pty
    import threading

    import numpy as np

    src = tmp_path / "map.mrc"
    vol = np.zeros((24, 24, 32), np.float32)
    vol[3:7, 3:7, 3:7] = 0.9
    mrc_file(src, vol, 10.0)
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # keep the terminal's buffer empty so the child never blocks on it
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "deepict_dask", "pick", str(src), "-o", str(tmp_path / "p.csv"),
           "--workers", "1", "--threads-per-worker", "1"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, env=env, timeout=120)
    os.close(slave)
    reader.join(5)
    os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    out = proc.stdout.decode()
    assert proc.returncode == 0, err
    assert "1 picks written" in out
    for mark in ("#", "%", "\r", "\x1b", "Completed", "dashboard"):
        assert mark not in out, f"{mark!r} on stdout: {out!r}"
    assert "Completed" in err and err.count("Dask dashboard:") == 1
    # the same run with stderr not a terminal: no bar at all
    proc = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "Completed" not in proc.stderr + proc.stdout


def test_run_line_progress_names_a_dashboard_only_when_there_is_one():
    import io

    from rich.console import Console

    from deepict_dask.pipeline.progress import LineProgress

    for dashboard, expected in ((None, "3 tomograms"), ("http://h:8787/status", "3 tomograms; Dask dashboard: http://h:8787/status")):
        buf = io.StringIO()
        LineProgress(Console(file=buf, width=200)).start(3, dashboard)
        assert buf.getvalue().strip() == expected
