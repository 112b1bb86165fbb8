"""Small builders shared by the tests: tiny MRC files and tiny saved U-Nets.

Plain functions (not fixtures) so a test can call them with its own arguments; ``conftest.py`` wraps the
common cases as fixtures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mrcfile
import numpy as np


def mrc_file(path: str | Path, data: np.ndarray, voxel: float | Sequence[float] = 10.0, *,
             origin: Sequence[float] | None = None, label: str | None = None) -> Path:
    """Write ``data`` (ZYX, dtype kept) as an MRC file and return its path.

    ``voxel`` is one size or (x, y, z) like mrcfile; ``origin`` sets the header origin and ``label`` the
    second header label (the first one is mrcfile's own stamp). Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel
        if origin is not None:
            m.header.origin = tuple(origin)
        if label is not None:
            m.header.label[1] = label.encode()
            m.header.nlabl = 2
    return path


def tiny_model(path: str | Path, *, name: str = "tiny", dim: int = 3, classes: Sequence[str] = ("ribosome",),
               patch: int = 16, filters: int = 2, voxel_size: float = 10.0, seed: int | None = 0) -> Path:
    """Save an untrained one-level U-Net (no batch norm) with its ModelInfo; a few kB, built in milliseconds.

    ``seed=None`` leaves torch's random state alone (for callers that seed once for several models).
    """
    import torch

    from deepict_dask.models import ModelInfo, build_network, save_model

    if seed is not None:
        torch.manual_seed(seed)
    info = ModelInfo(name=name, dim=dim, classes=list(classes), patch_size=[patch] * dim, voxel_size=voxel_size,
                     architecture={"kind": f"UNet{dim}D", "depth": 1, "initial_filters": filters,
                                   "batch_norm": False})
    return save_model(path, build_network(info), info)
