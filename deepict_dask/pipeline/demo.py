"""``deepict demo``: simulate a few tomograms and run the whole workflow on them with the shipped models.

Everything lands in one directory (default ``demo_out/``)::

    data/        simulated tomograms, ground-truth tables and masks (simulator layout)
    run.yaml     the configuration used -- 'deepict run demo_out/run.yaml' repeats (and resumes) it
    run/         the run directory: tomograms/*.ome.zarr, tables/, particles.csv/.star, summary.csv,
                 provenance.json, evaluation.json, report.html

The simulation seeds (200+) are never used to train the shipped models, so the F1 printed at the end
is measured on unseen data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepict_dask.cluster import ClusterSpec, dask_client
from deepict_dask.errors import ConfigError
from deepict_dask.pipeline.config import load_config
from deepict_dask.pipeline.engine import ProgressSink
from deepict_dask.pipeline.inputs import check_output_dir
from deepict_dask.pipeline.run import RunResult, run_workflow

log = logging.getLogger(__name__)

DEMO_SEED = 200
DEMO_SHAPE = (96, 192, 192)
DEMO_VOXEL_SIZE = 13.48

DEMO_CONFIG = """\
# Written by 'deepict demo'. Re-run (finished stages are skipped):  deepict run {config}
schema_version: 2
inputs:
  paths: {paths}
  voxel_size: {voxel_size}
  truth: "data/tables/{{name}}_particles.csv"   # simulated ground truth -> evaluation.json
output:
  dir: run
  table_formats: [csv, star]
  tilt_series_pixel_size: {voxel_size}   # simulated: the tilt series is modelled at the voxel size
  chunks: 128
  levels: 3
preprocess:
  normalize: true
  filter:
    enabled: {filter}
models:
  - name: demo2d
    path: demo2d
    predict:
      margin: 16         # 2D tiles keep 128 of 160 pixels (DeePiCt crops 48: 4x the tiles, same masks here)
  - name: demo3d
    path: demo3d
targets:
  - name: cytosol
    model: demo2d
    kind: segmentation
    pick:
      threshold: 0.5
  - name: organelle
    model: demo2d
    kind: segmentation
    pick:
      threshold: 0.5
  - name: membrane
    model: demo3d
    kind: segmentation
    pick:
      threshold: 0.5
  # threshold, minimum cluster size and method: the values tuned into demo3d by 'deepict evaluate sweep
  # --write-model' on the validation tomograms (simulation seeds 150-151, not demo tomograms);
  # 'deepict model-info demo3d' shows them
  - name: ribosome
    model: demo3d
    pick:
      context:
        target: cytosol
        mode: contact
  - name: fas
    model: demo3d
evaluation:
  tolerance: {tolerance}
  unit: A
"""


def simulate_one(out: str, seed: int, shape: Sequence[int], voxel_size: float) -> str:
    """Simulate and write one tomogram unless it is already there (the demo resumes too)."""
    from deepict_dask.pipeline.engine import local_dask
    from deepict_dask.simulate import output_paths, simulate_tomogram, write_simulation

    name = f"sim_{seed:04d}"
    paths = output_paths(out, name)
    if all(paths[k].exists() for k in ("tomogram", "table", "meta")):
        return str(paths["tomogram"])
    with local_dask():
        sim = simulate_tomogram(tuple(shape), voxel_size, seed=seed, preset="cell", name=name)
        return str(write_simulation(sim, out, name=name)["tomogram"])


def _demo3d_meta() -> dict[str, Any]:
    from deepict_dask.pipeline.config import ModelConfig, RunConfig
    from deepict_dask.pipeline.stages import model_files, read_model_meta

    cfg = RunConfig.model_validate({"inputs": {"paths": ["-"]}, "models": [ModelConfig(name="m", path="demo3d")]})
    return read_model_meta(model_files(cfg)["m"])


def demo_voxel_size() -> float:
    """The shipped 3D model's voxel size (the demo simulates at it)."""
    try:
        return float(_demo3d_meta()["voxel_size"])
    except Exception:  # the model check in run_workflow reports a missing model properly
        return DEMO_VOXEL_SIZE


def _filter_enabled() -> bool:
    """Run the spectrum filter only when the shipped models were trained on filtered tomograms."""
    try:
        pre = _demo3d_meta().get("preprocessing") or {}
    except Exception:
        return False
    return bool(pre.get("filter") or pre.get("spectrum_filter") or pre.get("equalize"))


def write_demo_config(out: Path, voxel_size: float, names: Sequence[str]) -> Path:
    path = out / "run.yaml"
    text = DEMO_CONFIG.format(
        config=path, paths="[" + ", ".join(f'"data/tomograms/{n}.mrc"' for n in names) + "]", voxel_size=f"{voxel_size:g}", filter="true" if _filter_enabled() else "false",
        tolerance=f"{6 * voxel_size:.0f}",
    )
    from deepict_dask.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def run_demo(
    out: str | Path = "demo_out",
    *,
    n: int = 3,
    shape: Sequence[int] = DEMO_SHAPE,
    seed: int = DEMO_SEED,
    workers: int | None = None,
    client: Any = None,
    progress: ProgressSink | None = None,
    force: Sequence[str] = (),
) -> RunResult:
    """Simulate ``n`` tomograms, run the workflow with the shipped models, evaluate, report.

    Parameters
    ----------
    out : path
        The demo folder (simulated data, ``run.yaml`` and the run directory).
    n : int
        Tomograms to simulate (at least 1).
    shape : sequence of int
        Tomogram shape, z, y, x (each at least 32).
    seed : int
        Seed of the first tomogram (the next ones count up).
    workers : int, optional
        LocalCluster workers (default: one per core).
    client : distributed.Client, optional
        An existing client to use instead of starting a LocalCluster.
    progress : ProgressSink, optional
        Receives progress events.
    force : sequence of str
        Stages to recompute, as for :func:`~deepict_dask.pipeline.run.run_workflow`.

    Returns
    -------
    RunResult
        The workflow's result.
    """
    if n < 1:
        raise ConfigError(f"n (--n) must be at least 1, got {n}")
    if len(shape) != 3 or min(shape) < 32:
        raise ConfigError(f"shape (--shape) needs three sizes of at least 32 voxels, got {list(shape)}")
    out = Path(out).resolve()
    check_output_dir(out)
    voxel_size = demo_voxel_size()
    names = [f"sim_{seed + i:04d}" for i in range(n)]
    config = load_config(write_demo_config(out, voxel_size, names))
    data = out / "data"

    def go(c: Any) -> RunResult:
        futures = [
            c.submit(simulate_one, str(data), seed + i, list(shape), voxel_size, key=f"simulate-{name}", pure=False)
            for i, name in enumerate(names)
        ]
        c.gather(futures)
        return run_workflow(config, client=c, progress=progress, force=force)

    if client is not None:
        return go(client)
    with dask_client(ClusterSpec(n_workers=workers), quiet=progress is not None) as c:
        return go(c)


#: mask targets of the demo scored against the simulation: target -> (truth file key, label value or None: any)
DEMO_MASKS = {"membrane": ("membrane", None), "cytosol": ("compartments", 1), "organelle": ("compartments", 2)}


def mask_scores(run_dir: str | Path, data: str | Path, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Voxel F1 of the run's membrane / cytosol / organelle masks against the simulated truth, pooled.

    The run's own evaluation scores picks; the demo's segmentation targets are scored here, a tomogram
    at a time (one mask and its truth in memory: the demo's tomograms are small).
    """
    import numpy as np

    from deepict_dask.io import open_volume
    from deepict_dask.layout import RunLayout, TomoStore
    from deepict_dask.simulate import output_paths

    out = {}
    for target, (key, value) in DEMO_MASKS.items():
        tp = fp = fn = 0
        for n in names:
            pred = np.asarray(open_volume(RunLayout(run_dir).store(n).path, group=TomoStore.label_group(target)).data) > 0
            t = np.asarray(open_volume(output_paths(data, n)[key]).data)
            truth = t > 0 if value is None else t == value
            tp += int(np.count_nonzero(pred & truth))
            fp += int(np.count_nonzero(pred & ~truth))
            fn += int(np.count_nonzero(~pred & truth))
        out[target] = {"voxel_f1": 2 * tp / max(2 * tp + fp + fn, 1), "tp": tp, "fp": fp, "fn": fn}
    return out
