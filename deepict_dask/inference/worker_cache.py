"""One model per worker process: tasks carry a small reference, never the network itself.

A :class:`PredictorRef` names the model file (and its sha256) plus the inference options. It is
what goes into every task; calling it inside a task returns the process's cached
:class:`~deepict_dask.inference.blockwise.Predictor`, loading the model on first use only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepict_dask.inference.blockwise import Predictor
from deepict_dask.inference.devices import process_gpu

_CACHE: OrderedDict[PredictorRef, Predictor] = OrderedDict()
_LOCK = threading.Lock()
_MAX_MODELS = 2
LOADS = {"count": 0}  # number of model loads in this process (observable in tests)


def _default_loader(path: str, device: str) -> tuple[Any, Any]:
    from deepict_dask.models import load_model

    return load_model(path, device=device, probabilities=False)


@dataclass(frozen=True)
class PredictorRef:
    """Everything a worker needs to build the predictor; cheap to pickle and hashable.

    ``loader(path, device) -> (module, ModelInfo)`` defaults to :func:`deepict_dask.models.load_model`;
    it must be a module-level function so that it pickles by reference.
    """

    model_path: str
    sha256: str = ""
    device: str = "cpu"
    batch_size: int | None = None
    precision: str = "auto"
    tta: str = "none"
    channels_last: bool | None = None
    fold_bn: bool = True
    compile: bool = False
    threads: int | None = None
    loader: Callable[[str, str], tuple[Any, Any]] | None = None

    def __call__(self) -> Predictor:
        return get_predictor(self)


def get_predictor(ref: PredictorRef) -> Predictor:
    """The cached predictor for ``ref`` in this process (loaded on first call)."""
    with _LOCK:
        pred = _CACHE.get(ref)
        if pred is not None:
            _CACHE.move_to_end(ref)
            return pred
        device = process_gpu(ref.device)
        module, info = (ref.loader or _default_loader)(ref.model_path, device)
        LOADS["count"] += 1
        pred = Predictor(
            module,
            info,
            device,
            batch_size=ref.batch_size,
            precision=ref.precision,
            tta=ref.tta,
            channels_last=ref.channels_last,
            fold_bn=ref.fold_bn,
            compile=ref.compile,
            threads=ref.threads,
        )
        _CACHE[ref] = pred
        while len(_CACHE) > _MAX_MODELS:
            _CACHE.popitem(last=False)
        return pred


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
