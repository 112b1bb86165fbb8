"""The whole workflow over many tomograms (``deepict run``, ``deepict demo``), resumable and fault tolerant.

Public API::

    from deepict_dask.pipeline import load_config, run_workflow, run_demo
    config = load_config("run.yaml")                 # ConfigError names the bad key and its line
    result = run_workflow(config, force=["pick"])     # RunResult: outcomes per tomogram, outputs, evaluation
    result.exit_code                                  # 1 when any tomogram failed

Modules: :mod:`.config` (schema), :mod:`.example` (``deepict init-config``), :mod:`.inputs` (input
resolution and checks), :mod:`.engine` (stage chains on Dask: hashing, skipping, bounded submission,
failure isolation), :mod:`.manifest` (completion records), :mod:`.stages` (the stages, thin calls
into io / preprocess / inference / pick), :mod:`.run` (orchestration), :mod:`.summary` (run-level
outputs), :mod:`.progress` (display), :mod:`.demo`. Names are imported on first use, so reading a
configuration does not import the engine.
"""

from __future__ import annotations

from deepict_dask.lazy import lazy_namespace

__all__, __getattr__ = lazy_namespace(__name__, {
    "RunConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "run_demo": "demo",
    "example_config": "example",
    "RunResult": "run",
    "dry_run": "run",
    "run_workflow": "run",
})
