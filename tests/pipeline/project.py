"""A small ``deepict run`` project (tomograms, truth tables, config, tiny models) for the workflow tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers import mrc_file

CONFIG = """\
inputs:
  paths: ["tomos/*.mrc"]
  truth: "truth/{{name}}.csv"
output: {{dir: run, chunks: 32, levels: 2}}
preprocess: {{normalize: true, filter: {{enabled: {filter}}}}}
models:
  - {{name: m2, path: tiny2d.safetensors, predict: {{margin: 4}}}}
  - {{name: m3, path: tiny3d.safetensors, predict: {{window: 16, margin: 2}}}}
targets:
  - {{name: cytosol, model: m2, kind: segmentation, pick: {{threshold: {cyto_threshold}}}}}
  - {{name: membrane, model: m3, kind: segmentation}}
{particles}
evaluation: {{tolerance: 3, unit: vox}}
execution: {{max_in_flight: 2}}
"""
PARTICLES = """\
  - name: ribosome
    model: m3
    pick:
      threshold: 0.5
      min_size: 2
      context: {target: cytosol, mode: contact}
"""


def make_project(root: Path, models: Path, n: int = 3, *, particles: bool = False, filter: bool = False,
                 cyto_threshold: float = 0.5) -> Path:
    """Write ``n`` noise tomograms with truth tables, copy the models from ``models``; return run.yaml."""
    rng = np.random.default_rng(1)
    (root / "tomos").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(exist_ok=True)
    for i in range(n):
        if (root / "tomos" / f"t{i}.mrc").exists():
            continue  # rewriting would change the inputs' fingerprints
        mrc_file(root / "tomos" / f"t{i}.mrc", rng.normal(size=(20, 32, 32)).astype(np.float32))
        pd.DataFrame({"tomo": f"t{i}", "class": "ribosome", "x": [5.0, 20.0], "y": [5.0, 20.0], "z": [5.0, 12.0],
                      "x_A": [50.0, 200.0], "y_A": [50.0, 200.0], "z_A": [50.0, 120.0]}).to_csv(
            root / "truth" / f"t{i}.csv", index=False)
    for name in ("tiny2d.safetensors", "tiny3d.safetensors"):
        if not (root / name).exists():
            (root / name).write_bytes((models / name).read_bytes())
    cfg = root / "run.yaml"
    cfg.write_text(CONFIG.format(filter=str(filter).lower(), cyto_threshold=cyto_threshold,
                                 particles=PARTICLES if particles else ""))
    return cfg


def stages_ran(result) -> dict[str, list[str]]:
    """Per tomogram, the stages a workflow result actually ran."""
    return {n: sorted(o.ran) for n, o in result.outcomes.items()}
