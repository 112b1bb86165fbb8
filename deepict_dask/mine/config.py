"""The ``deepict mine run`` configuration: the unsupervised part of feature mining in one file.

Its sections are the steps' own options models, unchanged (``centres`` = :class:`CentreOptions`,
``patches`` = :class:`PatchOptions`, ``train`` = :class:`StackTrainOptions`, ``encode``,
``choose_k``, ``cluster``, ``gallery``), so a setting means the same in the file, on the command
line of each step and in the Python API. YAML is read with the safe loader of the run configuration,
which also records line numbers: a bad value is one error naming file, line and key.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deepict_dask.errors import ConfigError
from deepict_dask.mine.options import (
    CentreOptions,
    ChooseKOptions,
    ClusterOptions,
    EncodeOptions,
    GalleryOptions,
    PatchOptions,
)
from deepict_dask.train.patch_stack import StackTrainOptions


class MineConfig(BaseModel):
    """Inputs, output directory and the options of every unsupervised mining step.

    ``choose_k`` is optional: when given, its scores are written before clustering (they do not
    change ``cluster.k``; look at them and at the gallery, then re-run ``deepict mine cluster``).
    ``train: null`` skips the autoencoder, which only ``encode.codes: invariant`` allows (those codes
    need no model); ``deepict mine train-ae`` can train it later for ``deepict mine labels``.
    """

    model_config = ConfigDict(extra="forbid")

    tomograms: list[str] = Field(min_length=1, description="tomograms to mine (MRC or OME-Zarr)")
    out: str = Field(description="the mining directory")
    centres: CentreOptions = Field(default_factory=CentreOptions)
    patches: PatchOptions = Field(default_factory=PatchOptions)
    train: StackTrainOptions | None = Field(default_factory=StackTrainOptions)
    encode: EncodeOptions = Field(default_factory=EncodeOptions)
    choose_k: ChooseKOptions | None = None
    cluster: ClusterOptions = Field(default_factory=ClusterOptions)
    gallery: GalleryOptions = Field(default_factory=GalleryOptions)

    @field_validator("tomograms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        dupes = sorted({p for p in value if value.count(p) > 1})
        if dupes:
            raise ValueError(f"listed twice: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _codes_need_a_model(self) -> MineConfig:
        if self.train is None and self.encode.codes == "autoencoder":
            raise ValueError("train: null skips the autoencoder, but encode.codes autoencoder needs it "
                             "(use encode: {codes: invariant}, or give train options)")
        return self

    def resolved(self, base: Path) -> MineConfig:
        """A copy whose relative paths are taken from ``base`` (the config file's directory)."""

        def fix(p: str) -> str:
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else base / q)

        return self.model_copy(update={"tomograms": [fix(p) for p in self.tomograms], "out": fix(self.out)})


def parse_mine_config(text: str, source: str = "<config>", base: Path | None = None) -> MineConfig:
    """Validate YAML text as a :class:`MineConfig`; one :class:`ConfigError` names line and key."""
    from deepict_dask.yaml_config import parse_yaml_model

    config, _ = parse_yaml_model(text, MineConfig, source, "tomograms:, out:, centres:, patches:, ...")
    return config.resolved(base) if base is not None else config


def load_mine_config(path: str | os.PathLike) -> MineConfig:
    """Read a ``deepict mine run`` configuration; relative paths are taken from its directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", path) from None
    return parse_mine_config(text, str(path), path.resolve().parent)


EXAMPLE = """\
# deepict mine run mine.yaml  -- feature mining without labels; paths are relative to this file.
# Every section is optional except tomograms and out; lengths are in voxels.
tomograms: [tomograms/sim_0.mrc]
out: mine                        # the mining directory (patches.zarr, codes.zarr, clusters/, gallery.html)
centres:                         # where patches are cut
  method: dog                    # dog: Difference-of-Gaussians peaks; grid: a regular grid
  sigma: 2.0                     # Gaussian smoothing before the DoG
  dog_sigma: 5.0                 # narrow Gaussian of the DoG (the wide one is dog_sigma * dog_k)
  dog_k: 1.1
  min_distance: 10.0             # peaks closer than this keep only the strongest
  polarity: dark                 # dark: particles darker than the ice (cryo-ET as stored)
  stride: 16                     # grid spacing (method grid)
patches:
  patch_shape: [32, 32, 32]      # z y x, each a multiple of 4
  normalization: tomogram        # tomogram, patch or none
train:                           # the autoencoder (MSE, Adam 1e-3, betas 0.9/0.99)
  max_epochs: 200
  patience: 20                   # stop after this many epochs without a better validation loss
  batch_size: 8
  validation_fraction: 0.1
  device: auto                   # auto, cpu or cuda
  # max_minutes: 30              # time budget
# train: null                    # skip the autoencoder (only with codes: invariant; labels need it later)
encode:
  codes: autoencoder             # or invariant: rotation-invariant descriptors (no model; orientation-blind)
  invariant_lowpass: 0.0         # invariant codes describe the patches without the stack's low-pass (null: as stored)
  device: auto
# choose_k:                      # optional: Calinski-Harabasz and gap statistic per k (neither decides alone)
#   ks: [20, 50, 100, 150]
cluster:
  k: 100
  seed: 0
gallery:
  columns: 8
"""
