"""Networks (2D/3D U-Nets) and self-describing model files.

``load_model(path)`` returns ``(module, ModelInfo)``; ``module(x)`` gives probabilities with one
channel per class (sigmoid) or background + classes (softmax).
"""

from deepict_dask.models.files import (
    DEMO_MODELS,
    build_network,
    check_voxel_size,
    demo_model_path,
    describe,
    load_model,
    read_model_info,
    resolve_model_path,
    save_model,
)
from deepict_dask.models.flops import flops_per_voxel, parameter_count
from deepict_dask.models.spec import ModelInfo
from deepict_dask.models.unet import PRESETS, ProbabilityHead, UNet, UNet2D, UNet3D, architecture_from

__all__ = [
    "DEMO_MODELS",
    "PRESETS",
    "ModelInfo",
    "ProbabilityHead",
    "UNet",
    "UNet2D",
    "UNet3D",
    "architecture_from",
    "build_network",
    "check_voxel_size",
    "demo_model_path",
    "describe",
    "flops_per_voxel",
    "load_model",
    "parameter_count",
    "read_model_info",
    "resolve_model_path",
    "save_model",
]
