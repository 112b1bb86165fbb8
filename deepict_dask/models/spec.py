"""What a model file says about itself (the contract between training, inference and the CLI).

A model file (``.safetensors``) holds the weights plus one JSON metadata entry that validates as
:class:`ModelInfo`. Loading never executes code from the file.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelInfo(BaseModel):
    """Self-description of a trained network.

    ``classes`` never includes background. With ``activation="sigmoid"`` (DeePiCt, multi-label) the
    network has ``len(classes)`` output channels, one independent probability each. With
    ``activation="softmax"`` (DeepFinder, multi-class) it has ``len(classes) + 1`` channels, channel 0
    being background.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    dim: Literal[2, 3]
    classes: list[str] = Field(min_length=1)
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    architecture: dict[str, Any] = Field(
        description="constructor arguments, with 'kind' naming the class (UNet2D, UNet3D, ...)"
    )
    in_channels: int = 1
    patch_size: list[int] = Field(description="training patch (3D: z, y, x; 2D: y, x)")
    voxel_size: float = Field(gt=0, description="voxel size in Angstrom the model was trained at")
    voxel_size_tolerance: float = Field(0.1, ge=0, description="relative tolerance before rescaling is needed")
    normalization: Literal["zscore", "none"] = "zscore"
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="data summary, config, scores")
    software_version: str = ""

    @property
    def out_channels(self) -> int:
        return len(self.classes) + (1 if self.activation == "softmax" else 0)
