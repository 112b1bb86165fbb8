"""Flags made from an options model: type, choices, default and help come from the model."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import Field

from deepict_dask.cli.main import build_parser
from deepict_dask.cli.options_flags import add_option_flags, options_from_args
from deepict_dask.errors import ConfigError
from deepict_dask.options import Options


class Toy(Options):
    size: int = Field(4, ge=1, description="edge in voxels")
    mode: Literal["fast", "exact"] = "fast"
    level: Literal[6, 26] = 26
    cutoff: float | None = Field(None, gt=0, description="cut-off")
    rescale: bool = True
    quiet: bool = False


FLAGS = {"size": "--size", "mode": "--mode", "level": "--level", "cutoff": "--cutoff",
         "rescale": "--no-rescale", "quiet": "--quiet"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_option_flags(p, Toy, FLAGS, help={"mode": "how (default %(default)s)"}, metavar={"size": "N"})
    return p


def test_flags_take_type_choices_default_and_help_from_the_model(capsys):
    p = _parser()
    args = p.parse_args([])
    assert (args.size, args.mode, args.level, args.cutoff, args.no_rescale, args.quiet) == (4, "fast", 26, None, False, False)
    assert options_from_args(Toy, args, FLAGS) == Toy()
    args = p.parse_args(["--size", "7", "--mode", "exact", "--level", "6", "--cutoff", "0.5", "--no-rescale", "--quiet"])
    assert options_from_args(Toy, args, FLAGS) == Toy(size=7, mode="exact", level=6, cutoff=0.5, rescale=False, quiet=True)
    text = p.format_help()
    assert "--size N" in text and "edge in voxels" in text and "how (default fast)" in text
    with pytest.raises(SystemExit):
        p.parse_args(["--level", "18"])  # not one of the Literal's values
    assert "invalid choice: 18" in capsys.readouterr().err


def test_a_bad_value_names_the_flag_and_the_field():
    args = _parser().parse_args(["--size", "0"])
    with pytest.raises(ConfigError, match=r"^--size \(size\): Input should be greater than or equal to 1"):
        options_from_args(Toy, args, FLAGS)


def test_commands_take_defaults_and_choices_from_their_models():
    from deepict_dask.inference.options import PredictOptions
    from deepict_dask.io.convert import ConvertOptions
    from deepict_dask.preprocess.options import FilterOptions

    args = build_parser().parse_args(["predict", "t.mrc", "--model", "m", "-o", "d"])
    assert (args.chunks, args.blend, args.sigma_z) == (PredictOptions().chunk, PredictOptions().blend, PredictOptions().sigma_z)
    args = build_parser().parse_args(["convert", "t.mrc", "-o", "d"])
    assert (args.levels, args.compressor, args.chunks) == (ConvertOptions().levels, "zstd", 128)
    args = build_parser().parse_args(["filter", "t.mrc", "-o", "d"])
    assert (args.max_halo, args.block_size) == (FilterOptions().max_halo, FilterOptions().block_size)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["convert", "t.mrc", "-o", "d", "--ngff", "0.6"])
    args = build_parser().parse_args(["evaluate", "sweep", "--pred", "m.mrc", "--truth", "t.csv", "--tolerance", "2"])
    assert args.connectivity == 26
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "sweep", "--pred", "m", "--truth", "t", "--tolerance", "2",
                                   "--connectivity", "8"])


def test_pick_flags_follow_pick_options_and_stay_unset_for_tuned_values():
    from typing import get_args

    from deepict_dask.cli.pick import options_from_args as pick_options
    from deepict_dask.pick.options import ContextRule, PickOptions

    parser = build_parser()
    args = parser.parse_args(["pick", "m.mrc", "-o", "o.csv"])
    assert (args.threshold, args.min_size, args.connectivity, args.context_mode, args.spacing) == (None,) * 5
    sub = parser._subparsers._group_actions[0].choices["pick"]
    choices = {a.dest: a.choices for a in sub._actions if a.choices and not isinstance(a.choices, dict)}
    assert choices["connectivity"] == list(get_args(PickOptions.model_fields["connectivity"].annotation))
    assert choices["context_mode"] == list(get_args(ContextRule.model_fields["mode"].annotation))
    args = parser.parse_args(["pick", "m.mrc", "-o", "o.csv", "--context", "mask.mrc", "--exclude",
                              "--context-distance", "5", "--context-mode", "colocalization", "--weighted"])
    options, loose = pick_options(args)
    assert options.weighted and options.context.invert and str(options.context.distance) == "5vx" and loose is None
    with pytest.raises(ConfigError, match=r"^--context-mode, --exclude: needs a context mask"):
        pick_options(parser.parse_args(["pick", "m.mrc", "-o", "o.csv", "--context-mode", "contact", "--exclude"]))
