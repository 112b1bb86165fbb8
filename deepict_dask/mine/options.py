"""Options of the mining stages: one pydantic model per step, shared by the Python API, config and CLI.

Every model forbids unknown keys and checks its values, so a typo or an impossible value is one
clear error before any work starts. Lengths are in voxels (the published method's units).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CentreOptions(_Options):
    """Where patches are taken: Difference-of-Gaussians peaks (``dog``) or a regular ``grid``."""

    method: Literal["dog", "grid"] = "dog"
    sigma: float = Field(2.0, ge=0, description="Gaussian smoothing before the DoG (voxels; 0: none)")
    dog_sigma: float = Field(5.0, gt=0, description="narrow Gaussian of the DoG (voxels)")
    dog_k: float = Field(1.1, gt=1, description="ratio of the wide to the narrow DoG Gaussian")
    min_distance: float = Field(10.0, gt=0, description="peaks closer than this (voxels) keep only the strongest")
    threshold: float | None = Field(None, description="minimum DoG response of a peak (default: any positive)")
    max_peaks: int | None = Field(None, ge=1, description="keep at most this many of the strongest peaks per tomogram")
    polarity: Literal["dark", "bright"] = Field(
        "dark", description="dark: particles darker than the background (cryo-ET density as stored); bright: inverted")
    stride: int = Field(16, ge=1, description="grid spacing (voxels), method grid")
    block: int = Field(128, ge=8, description="edge of the blocks the DoG search runs on (a halo is added)")


class PatchOptions(_Options):
    """Patch extraction: shape, normalisation and the chunking of the patch stack."""

    patch_shape: tuple[int, int, int] = (32, 32, 32)
    normalization: Literal["tomogram", "patch", "none"] = Field(
        "tomogram", description="z-score with the tomogram's mean/std, each patch's own, or keep the grey values")
    chunk: int = Field(256, ge=1, description="patches per chunk of the patch stack (one task each)")
    lowpass_sigma: float = Field(0.0, ge=0, description="Gaussian low-pass of the patches, sigma in voxels (0: none); "
                                 "noisy tomograms need it for the autoencoder to learn (about 2)")

    @field_validator("patch_shape")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 4:
            raise ValueError(f"patch edges must be >= 4 voxels, got {list(v)}")
        return v


class EncodeOptions(_Options):
    """What the codes are (the autoencoder's, or rotation-invariant descriptors) and how they are computed."""

    codes: Literal["autoencoder", "invariant"] = Field(
        "autoencoder", description="autoencoder: the trained encoder's codes (the published method); invariant: "
        "rotation-invariant descriptors (shell statistics, structure tensor), blind to a structure's orientation")
    device: str = Field("auto", description="auto (a GPU when visible), cpu or cuda[:N]")
    batch_size: int | None = Field(None, ge=1, description="patches per forward pass (default: by device)")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    chunk: int | None = Field(None, ge=1, description="patches per task (default: the patch stack's chunks)")
    invariant_lowpass: float | None = Field(
        0.0, ge=0, description="invariant codes: Gaussian low-pass (sigma, voxels) of the patches they are computed "
        "from; 0: none (the descriptors smooth at their own scales, and a low-pass blurs membranes into the "
        "background); when it differs from the patch stack's, the patches are cut again from the tomograms the "
        "stack came from, without storing them; null: the stack's patches as they are")


class ClusterOptions(_Options):
    """k-means on the codes (MiniBatchKMeans fed chunk by chunk)."""

    k: int = Field(100, ge=2, description="number of clusters")
    seed: int = Field(0, ge=0)
    batch_size: int = Field(4096, ge=16, description="codes per partial_fit step (at least 3k are used)")
    epochs: int = Field(3, ge=1, description="passes over the codes")


class GalleryOptions(_Options):
    """What the HTML gallery shows."""

    columns: int = Field(8, ge=1, description="slices per row of the montages")
    max_clusters: int | None = Field(None, ge=1, description="show only the largest clusters")
    title: str = "Feature mining clusters"


class ChooseKOptions(_Options):
    """Scores for choosing k: Calinski-Harabasz and the gap statistic."""

    ks: tuple[int, ...] = (2, 5, 10, 20, 50, 100)
    seed: int = Field(0, ge=0)
    sample: int = Field(20000, ge=10, description="codes sampled for the scores")
    references: int = Field(5, ge=1, description="uniform reference sets of the gap statistic")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or min(v) < 2:  # a field check, so errors name the field (and its flag, --ks)
            raise ValueError(f"ks must be values >= 2, got {list(v)}")
        return v
