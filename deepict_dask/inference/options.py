"""How to run a model over tomograms: one options model for the run config, the CLI and the API.

``window``/``margin`` are the names everywhere (``models[].predict: {window: 160, margin: 12}`` in a
run configuration, ``PredictOptions(window=160, margin=12)`` in Python); ``deepict predict`` keeps
its flags ``--patch``/``--overlap`` and maps them onto these fields. Defaults that depend on the
model or the device (window, margin, batch size, 2D threshold) stay ``None`` here and are resolved
when the model is loaded (``inference.predict``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from deepict_dask.options import Options

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


class PredictOptions(Options):
    """Inference settings (defaults follow DeePiCt where it defines them).

    Parameters
    ----------
    window
        3D: cube edge; 2D: tile edge, voxels (default: 160 on CPU / 128 on GPU for 3D models, the
        model's patch size for 2D ones).
    margin
        Voxels discarded per window side (crop blending) or weighted down (gaussian); default 12
        (3D) / 48 (2D). ``window`` must exceed ``2 * margin``.
    blend
        ``crop`` (DeePiCt) or ``gaussian`` weighting (nnU-Net).
    chunk
        Output block edge in voxels, rounded to whole window cores. A run sets it to twice the
        store's chunk edge (at least 64), so each task writes whole store chunks.
    batch_size
        Windows per forward pass (default: 2 on CPU, from free memory on GPU).
    dtype
        Stored probability type (``uint8`` stores ``p * 255``).
    tta
        Test-time augmentation that keeps the missing wedge: ``rotations`` (4 passes) or
        ``mirrors`` (8); writes a variance map.
    device
        ``auto`` (a GPU when present), ``cpu``, ``cuda`` or ``cuda:N``.
    precision
        Autocast precision (``auto``: fp16 on GPU, fp32 on CPU).
    rescale
        Rescale tomograms whose voxel size differs from the model's (else refuse them).
    threshold
        Also write a mask of voxels at or above this probability (2D default 0.75).
    sigma_z
        2D models: Gaussian smoothing along z, slices (0: off).
    channels_last
        3D on CPU: channels_last_3d memory layout (``None``: on for 3D models on CPU).
    fold_bn, compile
        Fold batch norm into the convolutions; ``torch.compile`` the network.
    levels
        Pyramid levels of the written maps.
    threads
        Torch threads per worker (default: the worker's).
    """

    model_config = ConfigDict(frozen=True)

    window: int | None = Field(None, ge=1, description="window edge in voxels (default: per model and device)")
    margin: int | None = Field(None, ge=0, description="voxels cropped per window side (default 12 for 3D, 48 for 2D)")
    blend: Literal["crop", "gaussian"] = "crop"
    chunk: int = Field(256, ge=1, description="output block edge in voxels (rounded to whole window cores)")
    batch_size: int | None = Field(None, ge=1, description="windows per forward pass (default: from the device)")
    dtype: Literal["uint8", "float16", "float32"] = "uint8"
    tta: Literal["none", "rotations", "mirrors"] = "none"
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    rescale: bool = True
    threshold: float | None = Field(None, gt=0, lt=1, description="also write a mask at this probability")
    sigma_z: float = Field(5.0, ge=0, description="2D models: smoothing along z in slices (0: off)")
    channels_last: bool | None = None
    fold_bn: bool = True
    compile: bool = False
    levels: int = Field(3, ge=1, description="pyramid levels of the written maps")
    threads: int | None = Field(None, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_RE.match(value):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("margin")
    @classmethod
    def _core_left(cls, value: int | None, info: ValidationInfo) -> int | None:
        window = info.data.get("window")
        if value is not None and window is not None and window - 2 * value < 1:
            raise ValueError(f"window {window} leaves nothing after cropping margin {value} per side")
        return value
