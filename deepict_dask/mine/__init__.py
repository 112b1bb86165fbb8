"""Unsupervised feature mining (Autoencoder3D + k-means), the engine's version of Zeng et al.

Patch centres from a distributed Difference of Gaussians, patches extracted by Dask tasks into a
chunked Zarr stack, codes from an autoencoder cached per worker (or rotation-invariant
descriptors, no model: :mod:`deepict_dask.mine.invariant`), MiniBatchKMeans in bounded
memory, and a self-contained HTML gallery of the clusters. Public API below; every step takes one
options model and reads/writes the paths :class:`MineLayout` names. :mod:`deepict_dask.mine.workflow`
holds the steps a user runs (``deepict mine``: each checks that the step before it ran), and
:func:`run_mine` with a :class:`MineConfig` the unsupervised part in one go.
"""

from deepict_dask.layout import MineLayout
from deepict_dask.mine.api import (
    cluster_codes,
    encode_patches,
    extract_patches,
    find_centres,
    score_k,
    write_gallery,
)
from deepict_dask.mine.kmeans import assign, choose_k
from deepict_dask.mine.options import (
    CentreOptions,
    ChooseKOptions,
    ClusterOptions,
    EncodeOptions,
    GalleryOptions,
    PatchOptions,
)
from deepict_dask.mine.workflow import filter_tomograms, make_patches, run_mine, train_ae, weak_labels


def __getattr__(name: str):
    """``MineConfig`` and ``load_mine_config`` on first use: their train section imports torch."""
    if name in ("MineConfig", "load_mine_config"):
        from deepict_dask.mine import config

        return getattr(config, name)
    raise AttributeError(f"module 'deepict_dask.mine' has no attribute {name!r}")


__all__ = [
    "CentreOptions",
    "ChooseKOptions",
    "ClusterOptions",
    "EncodeOptions",
    "GalleryOptions",
    "MineConfig",
    "MineLayout",
    "PatchOptions",
    "assign",
    "choose_k",
    "cluster_codes",
    "encode_patches",
    "extract_patches",
    "filter_tomograms",
    "find_centres",
    "load_mine_config",
    "make_patches",
    "run_mine",
    "score_k",
    "train_ae",
    "weak_labels",
    "write_gallery",
]
