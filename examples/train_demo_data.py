"""Simulate the training / validation tomograms of the shipped demo models, varying the acquisition.

    python examples/train_demo_data.py [--out demo_out/train_data] [--filter] [--write-configs]

Every tomogram is the ``cell`` content preset imaged with ``defocus`` contrast (the training family);
what real data varies is drawn per tomogram, reproducibly from its seed (:func:`sample_params`):
voxel size (nominal 13.48 A +-10 %), defocus, SNR (dose), B-factor, missing wedge (asymmetric tilt
ranges), ice thickness, crowding, and the contrast of membranes, particles and compartments.

Voxel size: the training loader does not rescale, so each tomogram is *simulated* at a voxel size
drawn around the nominal one and *declared* at the nominal size (header and tables). Structures
then appear 0.9-1.1 times their physical size, as in data whose pixel size is off by up to 10 % or
that was rescaled from a neighbouring size. The simulated size is kept in meta/ and params.csv.

Held out: the ``vpp`` (phase plate) imaging preset is never trained on; evaluate on it with
``examples/evaluate_shipped_models.py``. Seeds: 101-120 training, 150-151 validation; seeds >= 200
are never used here (the demo and the evaluation use them).

Output (the simulator's layout): tomograms/, labels/, tables/, meta/, plus ``manifest.json`` and
``params.csv`` (one row per tomogram). ``--filter`` also writes ``tomograms_filtered/NAME.mrc``:
normalized and equalized to the package's default target spectrum with the same function and
settings as ``deepict run`` (DeePiCt trains on filtered tomograms and filters at inference too).
``--write-configs`` (or ``--configs-only``, without simulating) points the data lists of ``train_demo3d.yaml`` / ``train_demo2d.yaml`` (next to
this script) at the written tomograms (filtered ones with ``--filter``, then recording the filter in
the model's ``preprocessing`` so that the demo filters too). Tomograms already written are kept.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

NOMINAL_VOXEL_SIZE = 13.48
SHAPE = (128, 256, 256)
TRAIN_SEEDS = tuple(range(101, 121))
VALIDATION_SEEDS = (150, 151)
#: the training family and the configuration that is never trained on
FAMILY = {"preset": "cell", "imaging": "defocus"}
HELD_OUT = {"preset": "cell", "imaging": "vpp"}
#: what the demo model files record when trained on filtered tomograms (read by the demo / evaluation)
FILTER = {"filter": "default", "lowpass_cutoff": 0.5, "lowpass_width": 0.05, "mode": "exact"}

#: inclusive ranges of every sampled parameter (the test checks the samples stay inside)
RANGES: dict[str, tuple[float, float]] = {
    "voxel_scale": (0.9, 1.1),  # simulated voxel size / nominal
    "defocus_um": (2.5, 6.0),
    "snr": (0.08, 0.4),  # log-uniform
    "bfactor": (150.0, 450.0),
    "tilt_max": (45.0, 70.0),
    "tilt_min": (-70.0, -45.0),  # drawn independently of tilt_max: asymmetric wedges
    "ice_fraction": (0.55, 0.95),  # ice thickness as a fraction of the z extent
    "ribosome": (4.0, 14.0),  # per (1000 A)^3 of cytosol
    "fas": (1.0, 3.0),
    "proteasome": (2.0, 6.0),
    "globular": (10.0, 40.0),
    "crowders": (0.5, 2.0),  # unresolved small proteins in the cytosol, per (100 A)^3
    "crowded": (0.05, 0.12),  # ribosome volume fraction, drawn for CROWDED_FRACTION of the tomograms
    "cytosol_background": (0.02, 0.08),
    "organelle_background": (0.06, 0.16),
    "ice_contrast": (0.8, 1.2),
    "particle_contrast": (0.7, 1.3),
    "membrane_contrast": (0.6, 1.4),
}
CROWDED_FRACTION = 0.25


def _uniform(rng: np.random.Generator, key: str) -> float:
    lo, hi = RANGES[key]
    return round(float(rng.uniform(lo, hi)), 4)


def sample_params(seed: int) -> dict[str, Any]:
    """The acquisition and content of tomogram ``seed``: a pure function of the seed (reproducible)."""
    rng = np.random.default_rng([int(seed), 18])
    u = lambda key: _uniform(rng, key)  # noqa: E731 - draw order is fixed below
    scale = u("voxel_scale")
    lo, hi = np.log(RANGES["snr"])
    snr = round(float(np.clip(np.exp(rng.uniform(lo, hi)), *RANGES["snr"])), 4)
    imaging = {"defocus_um": u("defocus_um"), "snr": snr, "bfactor": u("bfactor"),
               "tilt_max": u("tilt_max"), "tilt_min": u("tilt_min")}
    content = {
        "ice_fraction": u("ice_fraction"),
        "concentration": {k: u(k) for k in ("ribosome", "fas", "proteasome", "globular")},
        "crowders": {"cytosol": u("crowders"), "organelle": 2.0, "vesicle": 0.1, "outside": 0.1},
        "background": {"cytosol": u("cytosol_background"), "organelle": u("organelle_background"),
                       "vesicle": 0.0, "outside": 0.0},
        "ice_contrast": u("ice_contrast"),
        "particle_contrast": u("particle_contrast"),
        "membrane_contrast": u("membrane_contrast"),
    }
    crowded = bool(rng.random() < CROWDED_FRACTION)
    content["crowded"] = u("crowded") if crowded else None
    return {
        "name": f"sim_{int(seed):04d}", "seed": int(seed), **FAMILY,
        "voxel_size": round(NOMINAL_VOXEL_SIZE * scale, 4), "nominal_voxel_size": NOMINAL_VOXEL_SIZE,
        "overrides": {**content, **imaging},
    }


def plan(train_seeds=TRAIN_SEEDS, validation_seeds=VALIDATION_SEEDS) -> list[dict[str, Any]]:
    """Every tomogram to write, with its split (train / validation) and parameters."""
    return ([{**sample_params(s), "split": "train"} for s in train_seeds]
            + [{**sample_params(s), "split": "validation"} for s in validation_seeds])


def declare_voxel_size(sim, nominal: float):
    """The simulation re-declared at the ``nominal`` voxel size (tables' Angstrom columns follow)."""

    def fix(df):
        df = df.copy()
        if len(df):
            for a in "xyz":
                df[f"{a}_A"] = df[a].to_numpy(float) * nominal
        return df

    params = {**sim.params, "simulated_voxel_size": sim.voxel_size, "nominal_voxel_size": nominal}
    return dataclasses.replace(sim, voxel_size=nominal, table=fix(sim.table), filaments=fix(sim.filaments),
                               fiducials=fix(sim.fiducials), params=params)


def write_one(spec: dict[str, Any], out: Path, shape, with_filter: bool) -> dict[str, str]:
    """Simulate, write (unless already there) and optionally filter one tomogram; returns its files."""
    from deepict_dask.simulate import output_paths, simulate_tomogram, write_simulation

    name = spec["name"]
    paths = output_paths(out, name)
    if not all(paths[k].exists() for k in ("tomogram", "table", "meta")):
        sim = simulate_tomogram(tuple(shape), spec["voxel_size"], seed=spec["seed"], preset=spec["preset"],
                                imaging=spec["imaging"], name=name, **spec["overrides"])
        write_simulation(declare_voxel_size(sim, spec["nominal_voxel_size"]), out, name=name)
    files = files_of(name, with_filter)
    if with_filter and not (out / files["filtered"]).exists():
        filter_tomogram(paths["tomogram"], out / files["filtered"])
    return files


def files_of(name: str, with_filter: bool) -> dict[str, str]:
    """The files of tomogram ``name``, relative to the output directory."""
    from deepict_dask.simulate import output_paths

    paths = output_paths(".", name)
    files = {k: paths[k].as_posix() for k in ("tomogram", "labels", "membrane", "compartments", "table", "meta")}
    if with_filter:
        files["filtered"] = f"tomograms_filtered/{name}.mrc"
    return files


def filter_tomogram(src: Path, dst: Path) -> None:
    """Normalize + equalize to the shipped target spectrum, as the ``preprocess`` stage of ``deepict run``."""
    from deepict_dask.io import open_volume, write_mrc
    from deepict_dask.preprocess import apply_filter

    vol = open_volume(src)
    out = apply_filter(vol, None, mode=FILTER["mode"], lowpass_cutoff=FILTER["lowpass_cutoff"],
                       lowpass_width=FILTER["lowpass_width"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_mrc(out, dst)


def flat_row(spec: dict[str, Any]) -> dict[str, Any]:
    """One params.csv row: nested overrides flattened to ``key`` / ``key.sub`` columns."""
    row = {k: v for k, v in spec.items() if k not in ("overrides", "files")}
    for k, v in spec["overrides"].items():
        if isinstance(v, dict):
            row.update({f"{k}.{s}": x for s, x in v.items()})
        else:
            row[k] = "" if v is None else v
    return row


def write_manifest(out: Path, specs: list[dict[str, Any]], shape, with_filter: bool) -> None:
    from deepict_dask.io.atomic import atomic_path

    manifest = {
        "nominal_voxel_size": NOMINAL_VOXEL_SIZE, "shape": list(shape), "family": FAMILY, "held_out": HELD_OUT,
        "voxel_size_note": "simulated at 'voxel_size', declared at 'nominal_voxel_size' (structures scaled)",
        "ranges": {k: list(v) for k, v in RANGES.items()}, "crowded_fraction": CROWDED_FRACTION,
        "filter": FILTER if with_filter else None, "tomograms": specs,
    }
    with atomic_path(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    rows = [flat_row(s) for s in specs]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(out / "params.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _entry(spec: dict[str, Any], out: Path, base: Path, labels: dict[str, tuple[str, list[int] | None]]) -> dict:
    rel = lambda p: os.path.relpath(out / p, base)  # noqa: E731
    f = spec["files"]
    entry: dict[str, Any] = {"tomogram": rel(f.get("filtered", f["tomogram"])), "labels": {}}
    for cls, (key, values) in labels.items():
        entry["labels"][cls] = rel(f[key]) if values is None else {"path": rel(f[key]), "values": values}
    return entry


#: class -> (label file key, label values; None: any non-zero voxel)
LABELS_3D = {"ribosome": ("labels", [1]), "fas": ("labels", [2]), "membrane": ("membrane", None)}
LABELS_2D = {"cytosol": ("compartments", [1]), "organelle": ("compartments", [2])}


CONFIG_HEADER = """\
# Shipped demo model deepict_dask/data/models/{name}.safetensors ({dim}D, multi-label sigmoid).
# Data: python examples/train_demo_data.py{filt} --write-configs
#   (cell/defocus family with varied acquisition: seeds {train} train, {val} validation; vpp held out)
# Train: deepict train examples/{fname}
"""


def _seed_range(specs: list[dict[str, Any]], split: str) -> str:
    seeds = [s["seed"] for s in specs if s["split"] == split]
    return f"{min(seeds)}-{max(seeds)}" if len(seeds) > 1 else str(seeds[0])


def _no_alias_dumper():
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return NoAliases


def write_configs(specs: list[dict[str, Any]], out: Path, with_filter: bool, where: Path) -> list[Path]:
    """Point the data lists of the demo training configs at the written tomograms (paths relative)."""
    import yaml

    from deepict_dask.io.atomic import atomic_path

    written = []
    for fname, labels in (("train_demo3d.yaml", LABELS_3D), ("train_demo2d.yaml", LABELS_2D)):
        path = where / fname
        cfg = yaml.safe_load(path.read_text())
        for split in ("train", "validation"):
            cfg["data"][split] = [_entry(s, out, where, labels) for s in specs if s["split"] == split]
        cfg["preprocessing"] = dict(FILTER) if with_filter else {}
        header = CONFIG_HEADER.format(name=cfg["name"], fname=fname, dim=cfg["dim"], filt=" --filter" if with_filter else "",
                                      train=_seed_range(specs, "train"), val=_seed_range(specs, "validation"))
        with atomic_path(path) as tmp:
            tmp.write_text(header + yaml.dump(cfg, Dumper=_no_alias_dumper(), sort_keys=False, default_flow_style=None,
                                              width=120))
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out/train_data", help="output directory (default: %(default)s)")
    p.add_argument("--shape", type=int, nargs=3, default=SHAPE, metavar=("Z", "Y", "X"))
    p.add_argument("--filter", action="store_true", help="also write spectrum-equalized tomograms (tomograms_filtered/)")
    p.add_argument("--write-configs", action="store_true",
                   help="point examples/train_demo3d.yaml and train_demo2d.yaml at the written tomograms")
    p.add_argument("--configs-only", action="store_true",
                   help="only write the configs (for tomograms already simulated into --out)")
    args = p.parse_args()
    out = Path(args.out).resolve()
    specs = plan()
    here = Path(__file__).resolve().parent
    if args.configs_only:
        for s in specs:
            s["files"] = files_of(s["name"], args.filter)
        for path in write_configs(specs, out, args.filter, here):
            print("wrote", path)
        return
    t0 = time.perf_counter()
    for s in specs:
        t = time.perf_counter()
        s["files"] = write_one(s, out, args.shape, args.filter)
        o = s["overrides"]
        print(f"{s['name']} {s['split']:10s} vs={s['voxel_size']:.2f} df={o['defocus_um']:.1f}um "
              f"snr={o['snr']:.2f} tilt={o['tilt_min']:.0f}..{o['tilt_max']:.0f} ice={o['ice_fraction']:.2f} "
              f"crowded={o['crowded']} {time.perf_counter() - t:.1f}s", flush=True)
    write_manifest(out, specs, args.shape, args.filter)
    if args.write_configs:
        for path in write_configs(specs, out, args.filter, here):
            print("wrote", path)
    print(f"{len(specs)} tomograms in {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
