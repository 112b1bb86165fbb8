"""Training U-Nets from tomograms and annotations (``deepict train``), autoencoders and EDSS3D from patch
stacks (``deepict mine``), and painting labels (``deepict labels``).

Public API::

    from deepict_dask.train import load_config, train
    result = train(load_config("train.yaml"))        # TrainResult: the model file, losses, throughput

Names are imported on first use: the configuration (:mod:`.config`) and label painting
(:mod:`.labels`) need no torch, so ``deepict labels`` and configuration checks do not import it.
"""

from __future__ import annotations

from deepict_dask.lazy import lazy_namespace

__all__, __getattr__ = lazy_namespace(__name__, {
    "calibrate_thresholds": "calibrate",
    "EXAMPLE": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "labels_volume": "labels",
    "load_template": "labels",
    "paint_labels": "labels",
    "TrainResult": "loop",
    "resolve_device": "loop",
    "train": "loop",
    "StackTrainOptions": "patch_stack",
    "train_autoencoder": "patch_stack",
    "train_edss3d": "patch_stack",
})
