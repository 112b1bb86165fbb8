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
outputs), :mod:`.progress` (display), :mod:`.demo`.
"""

from deepict_dask.pipeline.config import RunConfig, load_config, parse_config
from deepict_dask.pipeline.demo import run_demo
from deepict_dask.pipeline.run import RunResult, dry_run, run_workflow

__all__ = ["RunConfig", "RunResult", "dry_run", "load_config", "parse_config", "run_demo", "run_workflow"]
