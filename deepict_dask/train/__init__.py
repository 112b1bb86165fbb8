"""Training U-Nets from tomograms and annotations (``deepict train``), autoencoders and EDSS3D from patch
stacks (``deepict mine``), and painting labels (``deepict labels``)."""

from deepict_dask.train.config import EXAMPLE, TrainConfig, load_config, parse_config
from deepict_dask.train.loop import TrainResult, resolve_device, train
from deepict_dask.train.patch_stack import StackTrainOptions, train_autoencoder, train_edss3d

__all__ = ["EXAMPLE", "StackTrainOptions", "TrainConfig", "TrainResult", "load_config", "parse_config",
           "resolve_device", "train", "train_autoencoder", "train_edss3d"]
