"""Where everything of a run lives: the one owner of run-directory paths and store group names.

A run directory (``deepict run``)::

    RUN_DIR/
      manifest/<tomo>.json             completion records (one per tomogram, ``.run`` for the run)
      manifest/<tomo>.files/<stage>.json   per-file inventories of each stage's outputs
      .deepict-run.lock                the lease of the run in progress
      tomograms/<tomo>.ome.zarr        one store per tomogram (see :class:`TomoStore`)
      tables/<tomo>/<target>.csv       picks of one target; <tomo>_particles.<fmt> all targets
      particles.csv, particles.star    all tomograms
      summary.csv, provenance.json, evaluation.json, report.html

A tomogram store (``deepict run``, ``deepict predict -o DIR``)::

    <tomo>.ome.zarr/                   the converted image (root, with pyramid)
      filtered                         normalized / spectrum-equalized image
      predictions/<model>              probability maps
      labels/<target>                  cluster labels or masks (the NGFF label images group)

A mining directory (``deepict mine``) is described by :class:`MineLayout`.

Stages, commands and the report ask these classes instead of spelling paths, so a path is
changed in one place.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deepict_dask.io.ngff import LABELS_GROUP

STORE_SUFFIX = ".ome.zarr"
RUN_RECORD = ".run"  # the manifest record of the run-level stages (a name no tomogram file can give)
LOCK_NAME = ".deepict-run.lock"
TEMPORARY_MARKS = (".tmp-", ".old-", ".scratch-")  # hidden leftovers of killed atomic writers
FILTERED = "filtered"
PREDICTIONS = "predictions"
LABELS = LABELS_GROUP


def store_path(folder: str | os.PathLike, name: str) -> Path:
    """The OME-Zarr store of tomogram ``name`` in ``folder`` (``deepict predict -o``, a run's tomograms)."""
    return Path(folder) / f"{name}{STORE_SUFFIX}"


class TomoStore:
    """The groups of one tomogram's OME-Zarr store.

    Parameters
    ----------
    path
        The store (``<tomo>.ome.zarr``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @staticmethod
    def prediction_group(model: str) -> str:
        """``predictions/<model>``: the probability maps of one model."""
        return f"{PREDICTIONS}/{model}"

    @staticmethod
    def label_group(target: str) -> str:
        """``labels/<target>``: a label image (cluster labels, a mask)."""
        return f"{LABELS}/{target}"

    def group(self, group: str | None = None) -> Path:
        """The path of ``group`` inside the store (the store itself, the root image, for None)."""
        return self.path / group if group else self.path

    @property
    def filtered(self) -> Path:
        return self.path / FILTERED

    def prediction(self, model: str) -> Path:
        return self.path / self.prediction_group(model)

    def label(self, target: str) -> Path:
        return self.path / self.label_group(target)

    def _children(self, kind: str) -> list[str]:
        d = self.path / kind
        if not d.is_dir():
            return []
        return sorted(c.name for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))

    def models(self) -> list[str]:
        """Names of the models whose predictions the store holds."""
        return self._children(PREDICTIONS)

    def sub_images(self) -> list[tuple[str, str]]:
        """(kind, group) of every prediction and label image, kind ``predictions`` or ``labels``."""
        return [(kind, f"{kind}/{name}") for kind in (PREDICTIONS, LABELS) for name in self._children(kind)]

    def group_dirs(self) -> list[Path]:
        """The store and its group folders (where killed writers leave temporaries)."""
        return [self.path, self.path / PREDICTIONS, self.path / LABELS]

    @staticmethod
    def of_group(path: str) -> str:
        """The store of a ``.../<tomo>.ome.zarr/predictions/<model>`` path (the path itself otherwise)."""
        return path.split(f"/{PREDICTIONS}/")[0]


class RunLayout:
    """Every path of a run directory.

    Parameters
    ----------
    root
        The run directory (``output.dir``).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # manifest
    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifest"

    def manifest_file(self, name: str) -> Path:
        """The completion record of tomogram ``name`` (``RUN_RECORD`` for the run-level stages)."""
        return self.manifest_dir / f"{name}.json"

    def inventory_dir(self, name: str) -> Path:
        """The per-file inventories of ``name``'s stages."""
        return self.manifest_dir / f"{name}.files"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    # per tomogram
    @property
    def tomograms_dir(self) -> Path:
        return self.root / "tomograms"

    def store(self, name: str) -> TomoStore:
        return TomoStore(store_path(self.tomograms_dir, name))

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    def tomo_tables(self, name: str) -> Path:
        return self.tables_dir / name

    def target_table(self, name: str, target: str) -> Path:
        """The picks of one target in one tomogram (CSV)."""
        return self.tomo_tables(name) / f"{target}.csv"

    def tomo_particles(self, name: str, fmt: str) -> Path:
        """All targets of one tomogram in one table of format ``fmt`` (the file suffix)."""
        return self.tomo_tables(name) / f"{name}_particles.{fmt}"

    # run-wide
    def particles(self, fmt: str) -> Path:
        """All tomograms in one table of format ``fmt``."""
        return self.root / f"particles.{fmt}"

    @property
    def summary(self) -> Path:
        return self.root / "summary.csv"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    # housekeeping
    def markers(self) -> list[Path]:
        """What makes a folder a run directory (any one of them)."""
        return [self.manifest_dir, self.lock, self.provenance]

    def is_run_dir(self) -> bool:
        return any(p.exists() for p in self.markers())

    def temporary_dirs(self, names: Iterable[str]) -> list[Path]:
        """The folders where killed writers can leave temporaries, for tomograms ``names``."""
        dirs = [self.tomograms_dir, self.manifest_dir, self.tables_dir, self.root]
        for name in names:
            dirs += [*self.store(name).group_dirs(), self.tomo_tables(name)]
        return dirs


def is_temporary(name: str) -> bool:
    """A hidden leftover of an atomic writer (``.X.tmp-*``, ``.X.old-*``, ``.X.scratch-*``)."""
    return name.startswith(".") and any(m in name for m in TEMPORARY_MARKS)


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
