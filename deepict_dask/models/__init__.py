"""Networks (2D/3D U-Nets, the 3D autoencoder) and self-describing model files.

``load_model(path)`` returns ``(module, ModelInfo)``; ``module(x)`` gives probabilities with one
channel per class (sigmoid) or background + classes (softmax).

Names are imported on first use: reading a model file's metadata (:mod:`.spec`) needs no torch, so
commands that only check models (a re-run of a finished workflow) start instantly.
"""

from __future__ import annotations

from deepict_dask.lazy import lazy_namespace

__all__, __getattr__ = lazy_namespace(__name__, {
    "DEMO_MODELS": "spec",
    "EDSS3D": "edss3d",
    "META_KEY": "spec",
    "ModelInfo": "spec",
    "demo_model_path": "spec",
    "read_model_info": "spec",
    "require_segmentation": "spec",
    "resolve_model_path": "spec",
    "build_network": "files",
    "check_voxel_size": "files",
    "describe": "files",
    "load_model": "files",
    "save_model": "files",
    "flops_per_voxel": "flops",
    "parameter_count": "flops",
    "PRESETS": "unet",
    "ProbabilityHead": "unet",
    "UNet": "unet",
    "UNet2D": "unet",
    "UNet3D": "unet",
    "architecture_from": "unet",
    "Autoencoder3D": "autoencoder",
})
