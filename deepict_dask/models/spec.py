"""What a model file says about itself (the contract between training, inference and the CLI).

A model file (``.safetensors``) holds the weights plus one JSON metadata entry that validates as
:class:`ModelInfo`. Loading never executes code from the file.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepict_dask.errors import DeepictError, InputError

META_KEY = "deepict_model_info"  # the safetensors metadata entry holding ModelInfo as JSON
DEMO_MODELS = ("demo3d", "demo2d")
_MAX_HEADER = 100_000_000


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
    task: Literal["segmentation", "autoencoder"] = Field(
        "segmentation", description="what the network outputs: class maps, or a reconstruction of its input patch"
    )
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
    picking: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per class: picking settings tuned on validation tomograms "
        "(threshold, min_size, method, min_distance_A, f1, ...), the defaults of 'deepict pick' and 'deepict run'"
    )
    software_version: str = ""

    @model_validator(mode="after")
    def _patch_fits_dim(self) -> ModelInfo:
        """A patch with a zero edge or the wrong number of axes breaks windowing and FLOP counts later."""
        if len(self.patch_size) != self.dim or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be {self.dim} positive edges for a {self.dim}D model, "
                             f"got {self.patch_size}")
        return self

    @property
    def out_channels(self) -> int:
        return len(self.classes) + (1 if self.activation == "softmax" else 0)


def require_segmentation(info: ModelInfo, path: str | os.PathLike | None = None) -> None:
    """Refuse a model that does not segment (an autoencoder) where probability maps are needed."""
    if info.task != "segmentation":
        raise InputError(f"model '{info.name}' is an {info.task} (task {info.task}), not a segmentation model; "
                         "train a segmentation model (e.g. EDSS3D on its weak labels) and use that", path)


def demo_model_path(name: str) -> Path:
    """Path of a shipped demo model (``demo3d`` or ``demo2d``)."""
    if name not in DEMO_MODELS:
        raise DeepictError(f"unknown demo model {name!r} (available: {', '.join(DEMO_MODELS)})")
    path = Path(str(resources.files("deepict_dask") / "data" / "models" / f"{name}.safetensors"))
    if not path.is_file():
        raise InputError("demo model is missing from the installation", path)
    return path


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A model file path, or a demo model's name (``demo3d``) resolved to its shipped file."""
    if str(name_or_path) in DEMO_MODELS and not Path(name_or_path).exists():
        return demo_model_path(str(name_or_path))
    return Path(name_or_path)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read and validate only the metadata of a model file: no weights, no torch, no code executed.

    A safetensors file starts with an 8-byte little-endian header length and a JSON header whose
    ``__metadata__`` holds our :class:`ModelInfo` JSON under :data:`META_KEY`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file is shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(_MAX_HEADER, path.stat().st_size - 8):
                raise ValueError(f"header length {n} does not fit the file")
            header = json.loads(fh.read(n))
        meta = header.get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise InputError(f"not a readable safetensors model file ({exc})", path) from exc
    if META_KEY not in meta:
        raise InputError(f"safetensors file has no '{META_KEY}' metadata: not a deepict model", path)
    try:
        return ModelInfo.model_validate_json(meta[META_KEY])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'info'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"invalid model metadata: {problems}", path) from exc


@functools.lru_cache(maxsize=32)
def _network_sha256(path: str, size: int, mtime_ns: int) -> str:
    import hashlib

    info = read_model_info(path).model_dump(exclude={"picking"})
    if info.get("task") == "segmentation":
        del info["task"]  # the default: hashes of models written before the field existed stay the same
    digest = hashlib.sha256(json.dumps(info, sort_keys=True).encode())
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        digest.update(json.dumps(header, sort_keys=True).encode())  # tensor names, shapes, offsets
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def network_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of what a model computes: its weights and metadata, without the tuned picking settings.

    Tuning (``evaluate sweep --write-model``) rewrites only ``picking`` in the header; predictions made
    with the file stay valid, so a run keys its prediction stage on this rather than the file's hash.
    """
    st = Path(path).stat()
    return _network_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
