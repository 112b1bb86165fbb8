"""Inference: run trained networks over tomograms blockwise on Dask.

The options model is imported here (it is light); the prediction functions live in
:mod:`.predict` (``predict_volume``, ``predict_file``, ``predict_many``), which imports torch.
"""

from deepict_dask.inference.options import PredictOptions

__all__ = ["PredictOptions"]
