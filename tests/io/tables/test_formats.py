"""io.tables: every format writes the same bytes as before the formats became one module each."""

from __future__ import annotations

import json

import pytest

from deepict_dask.io.tables import read_table, write_table
from tests.io.tables.golden import CASES, DATA, VS, sample_table


def _without_timestamp(text: str) -> str:
    """starfile stamps the time it wrote a file into a comment line."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("# Created by the starfile"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_format_writes_the_kept_bytes(tmp_path, name):
    make, kwargs = CASES[name]
    import deepict_dask.io.tables.star as star

    star._ASSUMED_TS_PIXEL.clear()
    got = write_table(make(sample_table()), tmp_path / name, **kwargs)
    assert _without_timestamp(got.read_text()) == _without_timestamp((DATA / name).read_text())


def test_copick_project_writes_the_kept_bytes(tmp_path):
    root = write_table(sample_table(), tmp_path / "project", fmt="copick", voxel_size=VS)
    kept = sorted(p.relative_to(DATA / "project") for p in (DATA / "project").rglob("*.json"))
    assert sorted(p.relative_to(root) for p in root.rglob("*.json")) == kept
    for rel in kept:
        got, want = (root / rel).read_text(), (DATA / "project" / rel).read_text()
        if rel.name == "copick_config.json":  # the overlay root is the project's absolute path
            got, want = ({k: v for k, v in json.loads(t).items() if k != "overlay_root"} for t in (got, want))
        assert got == want, rel


@pytest.mark.parametrize("name", ["all.csv", "all.star", "one.json", "all.tbl"])
def test_kept_files_read_back_to_the_table(name):
    make, kwargs = CASES[name]
    want = make(sample_table()).reset_index(drop=True)
    got = read_table(DATA / name, voxel_size=VS)
    assert len(got) == len(want)
    assert got["x"].tolist() == pytest.approx(want["x"].tolist(), rel=1e-12)
