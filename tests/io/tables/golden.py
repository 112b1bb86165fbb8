"""The fixed tables whose files in every format are kept under ``tests/io/data/`` (written by the code
before the table formats became one module each), so any change to the bytes a format writes shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent.parent / "data"
VS = (13.48, 13.48, 13.48)
SHAPES = {"TS1": (40, 200, 210), "TS2": (50, 220, 230)}


def sample_table() -> pd.DataFrame:
    """Two tomograms, two classes, every optional column, numbers that are not round."""
    from deepict_dask.io.tables import make_table

    rng = np.random.default_rng(7)
    n = 8
    return make_table(
        ["TS1"] * 4 + ["TS2"] * 4,
        ["ribosome", "fas"] * 4,
        zyx=rng.uniform(0, 40, (n, 3)),
        voxel_size=VS,
        score=rng.random(n),
        size=rng.integers(10, 500, n).astype(float),
        label=np.arange(1, n + 1),
        phi=rng.uniform(-180, 180, n),
        theta=rng.uniform(1, 179, n),
        psi=rng.uniform(-180, 180, n),
    )


def one_set(df: pd.DataFrame) -> pd.DataFrame:
    """The rows a single-set file (copick point file) can hold: one class of one tomogram."""
    return df[(df["tomo"] == "TS1") & (df["class"] == "fas")].reset_index(drop=True)


def numbered(df: pd.DataFrame) -> pd.DataFrame:
    """Dynamo numbers tomograms: numeric tomogram names keep theirs."""
    return df.assign(tomo=df["tomo"].str.removeprefix("TS"))


#: file name -> (table maker, write_table keyword arguments)
CASES = {
    "all.csv": (lambda df: df, {}),
    "all.star": (lambda df: df, {"voxel_size": VS, "shapes": SHAPES, "tilt_series_pixel_size": 2.5}),
    "one.star": (lambda df: df[df["tomo"] == "TS1"], {"voxel_size": VS, "shape": SHAPES["TS1"],
                                                      "tilt_series_pixel_size": 3.0}),
    "assumed.star": (lambda df: df, {}),
    "one.json": (one_set, {"voxel_size": VS}),
    "all.ndjson": (lambda df: df, {}),
    "all.motl": (lambda df: df, {"class_ids": {"ribosome": 1, "fas": 2}}),
    "all.tbl": (numbered, {"class_ids": {"ribosome": 1, "fas": 2}}),
}
