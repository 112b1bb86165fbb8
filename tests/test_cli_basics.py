"""The ``deepict`` shell: help for every command, version, clean errors, table conversion."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepict_dask import __version__
from deepict_dask.cli.main import build_parser, main
from deepict_dask.io.coords import make_table, read_table, write_table


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
        if action.option_strings and action.dest != "help":
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
