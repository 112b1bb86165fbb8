"""Score the demo models in distribution and on the held-out simulator configuration, with the gap.

    python examples/evaluate_shipped_models.py [--model3d demo3d] [--model2d demo2d] [--n 3] [--out demo_out/eval]

Two sets of fresh tomograms (the demo's shape, at the 3D model's voxel size, ``cell`` content):

* ``in_distribution``: ``defocus`` imaging at its nominal settings, seeds 200, 201, ... (the demo's);
* ``held_out_vpp``: ``vpp`` (Volta phase plate) imaging, seeds 300, 301, ..., a configuration the
  training data (``examples/train_demo_data.py``) never contains.

Both go through the demo's workflow (``deepict run`` with the configuration ``deepict demo`` writes,
the given model files instead of the shipped ones): the same preprocessing (the spectrum filter when
the 3D model's ``preprocessing`` metadata names one), prediction, thresholds and picking. Printed per
set: picking F1 per particle class and pooled (matched within the demo's tolerance), and voxel F1 of
membrane, cytosol and organelle masks (probability >= the demo's thresholds). ``scores.json`` in
``--out`` holds every number.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from deepict_dask.pipeline.demo import DEMO_MASKS

SETS = {"in_distribution": ("defocus", 200), "held_out_vpp": ("vpp", 300)}


def simulate_sets(data: Path, n: int, shape, voxel_size: float) -> dict[str, list[str]]:
    """Write ``n`` tomograms per set (kept when already there); returns set -> tomogram names."""
    from deepict_dask.simulate import output_paths, simulate_tomogram, write_simulation

    names: dict[str, list[str]] = {}
    for key, (imaging, first) in SETS.items():
        names[key] = []
        for seed in range(first, first + n):
            name = f"sim_{seed:04d}"
            if not output_paths(data, name)["meta"].exists():
                sim = simulate_tomogram(tuple(shape), voxel_size, seed=seed, preset="cell", imaging=imaging, name=name)
                write_simulation(sim, data, name=name)
            names[key].append(name)
    return names


def filter_settings(model3d: Path) -> dict[str, Any]:
    """The run config's ``preprocess.filter`` that matches how the 3D model's training data was filtered."""
    from deepict_dask.pipeline.stages import read_model_meta

    pre = read_model_meta(model3d).get("preprocessing") or {}
    flt = pre.get("filter") or pre.get("spectrum_filter") or pre.get("equalize")
    if not flt:
        return {"enabled": False}
    out: dict[str, Any] = {"enabled": True, "target": flt if isinstance(flt, str) else "default"}
    for k in ("lowpass_cutoff", "lowpass_width", "mode"):
        if k in pre:
            out[k] = pre[k]
    return out


def write_config(out: Path, voxel_size: float, names: list[str], models: dict[str, Path]) -> Path:
    """The demo's run configuration, pointed at ``models`` and with the filter the 3D model asks for."""
    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.pipeline.demo import write_demo_config

    path = write_demo_config(out, voxel_size, names)
    cfg = yaml.safe_load(path.read_text())
    for m in cfg["models"]:
        m["path"] = str(models[m["name"]])
    cfg.setdefault("preprocess", {})["filter"] = filter_settings(models["demo3d"])
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def picking_scores(run_dir: Path, data: Path, names: list[str], classes: list[str], tolerance: float) -> dict:
    """Picking precision / recall / F1 per class and pooled over ``names`` (the demo's matching)."""
    import pandas as pd

    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.io.coords import read_table

    pred = read_table(run_dir / "particles.csv")
    pred = pred[pred["tomo"].isin(names) & pred["class"].isin(classes)]
    truth = pd.concat([read_table(data / "tables" / f"{n}_particles.csv").assign(tomo=n) for n in names],
                      ignore_index=True)
    truth = truth[truth["class"].isin(classes)]
    ev = evaluate_picks(pred, truth, tolerance, unit="A", tomograms="truth", by_class=True)
    m = ev.metrics
    out = {"pooled": {k: m.get(k) for k in ("tp", "fp", "fn", "precision", "recall", "f1")}}
    for c in classes:
        pc = (m.get("per_class") or {}).get(c, {})
        out[c] = {k: pc.get(k) for k in ("tp", "fp", "fn", "precision", "recall", "f1")}
    return out


def table(scores: dict[str, Any], classes: list[str]) -> str:
    """The printed comparison: one row per score, one column per set, and the gap."""
    a, b = SETS
    rows = [("picking F1 pooled", scores[a]["picking"]["pooled"]["f1"], scores[b]["picking"]["pooled"]["f1"])]
    rows += [(f"picking F1 {c}", scores[a]["picking"][c]["f1"], scores[b]["picking"][c]["f1"]) for c in classes]
    rows += [(f"voxel F1 {c}", scores[a]["masks"][c]["voxel_f1"], scores[b]["masks"][c]["voxel_f1"]) for c in DEMO_MASKS]
    lines = [f"{'score':24s} {a:>16s} {b:>16s} {'gap':>8s}"]
    for label, x, y in rows:
        fx = float(x or 0.0)
        fy = float(y or 0.0)
        lines.append(f"{label:24s} {fx:16.3f} {fy:16.3f} {fx - fy:8.3f}")
    return "\n".join(lines)


def main() -> None:
    from deepict_dask.cluster import ClusterSpec, dask_client
    from deepict_dask.models.spec import resolve_model_path
    from deepict_dask.pipeline.config import load_config
    from deepict_dask.pipeline.demo import DEMO_SHAPE, mask_scores
    from deepict_dask.pipeline.run import run_workflow
    from deepict_dask.pipeline.stages import read_model_meta

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model3d", default="demo3d", help="3D model file (default: the shipped demo3d)")
    p.add_argument("--model2d", default="demo2d", help="2D model file (default: the shipped demo2d)")
    p.add_argument("--n", type=int, default=3, help="tomograms per set (default %(default)s)")
    p.add_argument("--shape", type=int, nargs=3, default=DEMO_SHAPE, metavar=("Z", "Y", "X"))
    p.add_argument("--out", default="demo_out/eval", help="work directory (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="dask workers (default: as the demo)")
    args = p.parse_args()
    t0 = time.perf_counter()
    models = {"demo3d": resolve_model_path(args.model3d), "demo2d": resolve_model_path(args.model2d)}
    voxel_size = float(read_model_meta(models["demo3d"])["voxel_size"])
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    sets = simulate_sets(data, args.n, args.shape, voxel_size)
    config = load_config(write_config(out, voxel_size, [n for v in sets.values() for n in v], models))
    with dask_client(ClusterSpec(n_workers=args.workers), quiet=True) as c:
        result = run_workflow(config, client=c)
    classes = [t.name for t in config.targets if t.kind == "particles"]
    scores: dict[str, Any] = {"models": {k: str(v) for k, v in models.items()},
                              "filter": config.preprocess.filter.enabled, "tolerance_A": config.evaluation.tolerance}
    for key, names in sets.items():
        scores[key] = {"tomograms": names, "imaging": SETS[key][0],
                       "picking": picking_scores(result.run_dir, data, names, classes, config.evaluation.tolerance),
                       "masks": mask_scores(result.run_dir, data, names)}
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "scores.json").write_text(json.dumps(scores, indent=2, default=float))
    print(table(scores, classes))
    print(f"filter: {'on' if scores['filter'] else 'off'}; {args.n} tomograms per set; {scores['seconds']:.0f} s; "
          f"details: {out / 'scores.json'}")


if __name__ == "__main__":
    main()
