"""Move a sigmoid model's per-class decision thresholds to 0.5 by shifting the output biases.

A model whose best threshold for a class is ``t`` (found on validation data) gives the same masks at
0.5 after adding ``logit(0.5) - logit(t) = -log(t / (1 - t))`` to that class's output bias:
``sigmoid(z + b) > 0.5  <=>  sigmoid(z) > t``. Downstream tools can then use the default threshold.
The shift is recorded in the model file (``training.threshold_calibration``).

    python -m deepict_dask.train.calibrate MODEL OUT ribosome=0.4 [class=t ...]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from deepict_dask.errors import ConfigError
from deepict_dask.models.files import load_model, save_model


def calibrate_thresholds(model_path: str | Path, out: str | Path, thresholds: Mapping[str, float]) -> Path:
    net, info = load_model(model_path, probabilities=False)
    if info.activation != "sigmoid":
        raise ConfigError("threshold calibration applies to sigmoid (multi-label) models only")
    head = net.head
    done = dict(info.training.get("threshold_calibration", {}))
    with torch.no_grad():
        for name, t in thresholds.items():
            if name not in info.classes:
                raise ConfigError(f"class {name!r} is not in the model (classes: {info.classes})")
            if not 0 < t < 1:
                raise ConfigError(f"threshold for {name!r} must be between 0 and 1, got {t}")
            head.bias[info.classes.index(name)] -= math.log(t / (1 - t))
            done[name] = {"threshold_before": t, "now": 0.5}
    info = info.model_copy(update={"training": {**info.training, "threshold_calibration": done}})
    return save_model(out, net, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("thresholds", nargs="+", metavar="CLASS=T")
    a = p.parse_args(argv)
    th = {}
    for item in a.thresholds:
        k, _, v = item.partition("=")
        th[k] = float(v)
    print(calibrate_thresholds(a.model, a.out, th))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
