"""Every path under a mining output directory, named once (the API, CLI and config use these)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MineLayout:
    """Paths of one mining directory ``root``::

        tomograms.json         the tomogram paths the patches came from (for the gallery's overlays)
        centres.csv            patch centres (before dropping those too close to a border)
        patches.zarr           patch stack, N x D x H x W float32
        patches.csv            where each patch comes from (column ``patch`` = row of the stack)
        models/ae.safetensors  the autoencoder
        models/ae_training/    its training run (checkpoints, log.csv, config.json)
        codes.zarr             codes, N x code_dim float32
        clusters/labels.zarr   cluster of each patch (int32)
        clusters/centres.json  k-means centres and cluster sizes
        clusters/clusters.csv  one row per cluster (size, fraction, main tomogram)
        clusters/choose_k.csv  Calinski-Harabasz and gap statistic per k (+ choose_k.png)
        gallery.html           the clusters gallery
    """

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> MineLayout:
        return cls(Path(root))

    @property
    def tomograms(self) -> Path:
        return self.root / "tomograms.json"

    @property
    def centres(self) -> Path:
        return self.root / "centres.csv"

    @property
    def patches(self) -> Path:
        return self.root / "patches.zarr"

    @property
    def patches_table(self) -> Path:
        return self.root / "patches.csv"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def autoencoder(self) -> Path:
        return self.models / "ae.safetensors"

    @property
    def ae_training(self) -> Path:
        return self.models / "ae_training"

    @property
    def codes(self) -> Path:
        return self.root / "codes.zarr"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters"

    @property
    def labels(self) -> Path:
        return self.clusters / "labels.zarr"

    @property
    def cluster_centres(self) -> Path:
        return self.clusters / "centres.json"

    @property
    def clusters_table(self) -> Path:
        return self.clusters / "clusters.csv"

    @property
    def choose_k_table(self) -> Path:
        return self.clusters / "choose_k.csv"

    @property
    def choose_k_plot(self) -> Path:
        return self.clusters / "choose_k.png"

    @property
    def gallery(self) -> Path:
        return self.root / "gallery.html"
