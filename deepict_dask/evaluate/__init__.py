"""Evaluation: picks against true positions, segmentations against masks, sweeps, tuning, reports.

Public API::

    from deepict_dask.evaluate import evaluate_picks, sweep, tune, build_report
    ev = evaluate_picks(picks, truth, tolerance=60, unit="A")   # PickEvaluation: per class and tomogram

:func:`sweep` and :func:`tune` share their names with their modules (:mod:`.sweep`, :mod:`.tune`), so
they are imported here, at once: a module imported later would otherwise take the name. Everything
else is imported on first use (matplotlib and the matching solvers only when asked for).
"""

from __future__ import annotations

from deepict_dask.evaluate.sweep import sweep as sweep
from deepict_dask.evaluate.tune import tune as tune
from deepict_dask.lazy import lazy_namespace

_all, __getattr__ = lazy_namespace(__name__, {
    "load_table": "files",
    "load_volume": "files",
    "write_json": "files",
    "Matching": "matching",
    "match_greedy": "matching",
    "match_optimal": "matching",
    "PickEvaluation": "picking",
    "check_unit": "picking",
    "confusion_matrix": "picking",
    "evaluate_picks": "picking",
    "figure_png": "plots",
    "RunFiles": "report",
    "build_report": "report",
    "discover": "report",
    "metrics_kind": "report",
    "mask_metrics": "segmentation",
    "probability_metrics": "segmentation",
    "spatial_array": "segmentation",
    "robust_best": "sweep",
    "tune_class": "tune",
})
__all__ = sorted([*_all, "sweep", "tune"])
