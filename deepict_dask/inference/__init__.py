"""Inference: run trained networks over tomograms blockwise on Dask (``deepict predict``, a run's predict stage).

Public API::

    from deepict_dask.inference import PredictOptions, make_ref, predict_file
    ref = make_ref("model.pt", PredictOptions())
    predict_file("TS_01.mrc", ref, "predictions/")      # -> predictions/TS_01.ome.zarr

Names are imported on first use: :class:`PredictOptions` is light (config checks use it), the
prediction functions in :mod:`.predict` import torch.
"""

from __future__ import annotations

from deepict_dask.lazy import lazy_namespace

__all__, __getattr__ = lazy_namespace(__name__, {
    "PredictOptions": "options",
    "Prediction": "predict",
    "make_ref": "predict",
    "predict_file": "predict",
    "predict_many": "predict",
    "predict_volume": "predict",
    "write_prediction": "predict",
})
