"""Training U-Nets from tomograms and annotations (``deepict train``) and painting labels (``deepict labels``)."""

from deepict_dask.train.config import EXAMPLE, TrainConfig, load_config, parse_config
from deepict_dask.train.loop import TrainResult, resolve_device, train

__all__ = ["EXAMPLE", "TrainConfig", "TrainResult", "load_config", "parse_config", "resolve_device", "train"]
