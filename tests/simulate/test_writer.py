"""A series of simulated tomograms written through the API: layout, combined table, checks first."""

from __future__ import annotations

import pandas as pd
import pytest

from deepict_dask.errors import ConfigError, InputError, OutputError
from deepict_dask.simulate.writer import output_paths, series_names, write_series


def test_write_series_writes_every_tomogram_and_one_table(tmp_path):
    seen = []
    names = write_series(tmp_path, 2, shape=(32, 48, 48), seed=3, preset="particles", prefix="t",
                         on_written=lambda name, sim: seen.append((name, len(sim.table))))
    assert names == series_names("t", 3, 2) == ["t_0003", "t_0004"]
    assert [name for name, _ in seen] == names
    for name in names:
        assert all(p.exists() for p in output_paths(tmp_path, name).values())
    both = pd.read_csv(tmp_path / "particles.csv")
    assert both.groupby("tomo").size().to_dict() == {name: n for name, n in seen}
    with pytest.raises(OutputError, match="already exists"):  # refused before anything is rendered
        write_series(tmp_path, 1, shape=(32, 48, 48), seed=4, preset="particles", prefix="t")


def test_write_series_checks_everything_before_writing(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="must be >= 1, got 0"):
        write_series(out, 0)
    with pytest.raises(ConfigError, match="unknown simulation option"):
        write_series(out, 1, shape=(32, 48, 48), overrides={"bogus": 1})
    with pytest.raises(InputError, match="ribosome"):  # cannot place 900 ribosomes in a tiny volume: fails while planning
        write_series(out, 2, shape=(32, 48, 48), preset="particles",
                     overrides={"classes": ("ribosome",), "counts": {"ribosome": 900}})
    assert not out.exists() or not any(out.rglob("*"))
