"""Small simulated tomograms for the mining tests: dark spherical blobs on Gaussian noise."""

from __future__ import annotations

import numpy as np
import pytest

from deepict_dask.io import write_mrc
from deepict_dask.io.volume import make_volume


def blob_volume(shape=(64, 64, 64), centres=((20, 20, 20), (32, 40, 15), (45, 31, 50)), radius=4.0,
                noise=0.3, seed=0) -> np.ndarray:
    """Gaussian noise with dark Gaussian blobs (cryo-ET contrast: density is dark)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0, noise, shape).astype(np.float32)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    for c in centres:
        vol -= 3.0 * np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * radius**2))
    return vol


@pytest.fixture
def blob_mrc(tmp_path):
    """Write ``blob_volume(**kw)`` as ``tmp_path/<name>.mrc`` (voxel size 10 A); returns its path."""

    def make(name: str = "tomoA", **kw):
        path = tmp_path / f"{name}.mrc"
        write_mrc(make_volume(blob_volume(**kw), voxel_size=10.0), path)
        return path

    return make


@pytest.fixture
def grid_stack(blob_mrc, tmp_path):
    """``(tomogram, layout)``: 18 patches of 16^3 on a grid of ``blob_mrc("tomoA")``, stack chunks of 5."""
    from deepict_dask.io.coords import make_table
    from deepict_dask.mine import MineLayout, PatchOptions, extract_patches

    path = blob_mrc("tomoA")
    zyx = [(z, y, x) for z in (12, 30, 48) for y in (12, 30, 48) for x in (20, 40)]
    layout = MineLayout.at(tmp_path / "mine")
    extract_patches([path], make_table("tomoA", "grid", zyx=np.asarray(zyx), voxel_size=10.0), layout,
                    PatchOptions(patch_shape=(16, 16, 16), chunk=5))
    return path, layout
