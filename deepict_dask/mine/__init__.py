"""Unsupervised feature mining (Autoencoder3D + k-means), the engine's version of Zeng et al.

Patch centres from a distributed Difference of Gaussians, patches extracted by Dask tasks into a
chunked Zarr stack, codes from an autoencoder cached per worker, MiniBatchKMeans in bounded
memory, and a self-contained HTML gallery of the clusters. Public API below; every step takes one
options model and reads/writes the paths :class:`MineLayout` names.
"""

from deepict_dask.mine.api import (
    cluster_codes,
    encode_patches,
    extract_patches,
    find_centres,
    score_k,
    write_gallery,
)
from deepict_dask.mine.kmeans import assign, choose_k
from deepict_dask.mine.layout import MineLayout
from deepict_dask.mine.options import (
    CentreOptions,
    ChooseKOptions,
    ClusterOptions,
    EncodeOptions,
    GalleryOptions,
    PatchOptions,
)

__all__ = [
    "CentreOptions",
    "ChooseKOptions",
    "ClusterOptions",
    "EncodeOptions",
    "GalleryOptions",
    "MineLayout",
    "PatchOptions",
    "assign",
    "choose_k",
    "cluster_codes",
    "encode_patches",
    "extract_patches",
    "find_centres",
    "score_k",
    "write_gallery",
]
