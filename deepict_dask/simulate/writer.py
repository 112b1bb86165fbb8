"""Writing a simulation to disk in a stable layout.

Layout under ``out_dir`` for a tomogram called ``NAME`` (``fmt="mrc"``, the default)::

    tomograms/NAME.mrc                 float32 tomogram (protein dark), voxel size in the header
    labels/NAME_classes.mrc            uint8 particle + filament class ids (see meta class_ids)
    labels/NAME_instances.mrc          float32 (exact integers) particle ids = table 'instance'
    labels/NAME_membranes.mrc          uint8 membrane mask (0/1)
    labels/NAME_compartments.mrc       uint8 0 outside cell, 1 cytosol, 2 organelle, 3 vesicle lumen
    tables/NAME_particles.csv          truth table (project schema + phi, theta, psi, membrane_bound, ...)
    tables/NAME_filaments.csv          filament centrelines (one row per point)
    tables/NAME_fiducials.csv          gold bead centres
    meta/NAME.json                     parameters, seed, class ids, compartment codes, density sign

With ``fmt="zarr"`` the volumes go into one OME-Zarr store ``tomograms/NAME.zarr`` (image at the
root, label images ``labels/classes``, ``labels/instances``, ``labels/membranes``,
``labels/compartments``); the tables and meta file are the same. Every file is written atomically.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepict_dask.errors import ConfigError
from deepict_dask.io.atomic import atomic_path

from .tomogram import CHANNELS, SimulatedTomogram

VOLUMES = {"labels": "classes", "instance": "instances", "membrane": "membranes", "compartments": "compartments"}
DTYPES = {"labels": np.uint8, "instance": np.uint32, "membrane": np.uint8, "compartments": np.uint8}


def output_paths(out_dir, name: str, fmt: str = "mrc") -> dict[str, Path]:
    """Where :func:`write_simulation` puts each output (the documented layout)."""
    out = Path(out_dir)
    if fmt not in ("mrc", "zarr"):
        raise ConfigError(f"unknown output format {fmt!r}; choose mrc or zarr")
    paths: dict[str, Path] = {}
    if fmt == "mrc":
        paths["tomogram"] = out / "tomograms" / f"{name}.mrc"
        for key, label in VOLUMES.items():
            paths[key] = out / "labels" / f"{name}_{label}.mrc"
    else:
        paths["tomogram"] = out / "tomograms" / f"{name}.zarr"
    paths["table"] = out / "tables" / f"{name}_particles.csv"
    paths["filaments"] = out / "tables" / f"{name}_filaments.csv"
    paths["fiducials"] = out / "tables" / f"{name}_fiducials.csv"
    paths["meta"] = out / "meta" / f"{name}.json"
    return paths


def write_simulation(sim: SimulatedTomogram, out_dir, name: str | None = None, fmt: str = "mrc",
                     overwrite: bool = True) -> dict[str, Path]:
    """Write a simulation in the documented layout; returns the paths written (see :func:`output_paths`).

    Parameters
    ----------
    sim : SimulatedTomogram
        What :func:`~deepict_dask.simulate.simulate_tomogram` returned.
    out_dir : path
        The output folder (``tomograms/``, ``labels/``, ``tables/`` are made in it).
    name : str, optional
        The file names' stem (default ``sim.name``).
    fmt : str
        ``"mrc"`` (one file per volume) or ``"zarr"`` (one OME-Zarr store with label images).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict
        Output kind (``tomogram``, ``table``, ``filaments``, ...) -> its path.
    """
    import dask.array as da

    from deepict_dask.io import make_volume, write_mrc, write_ome_zarr
    from deepict_dask.io.tables import write_table

    name = name or sim.name
    paths = output_paths(out_dir, name, fmt)
    out = Path(out_dir)
    arrays = {"tomogram": sim.tomogram, **{k: getattr(sim, k) for k in VOLUMES}}
    tmp_store = None
    if sim.is_lazy:
        # Render every block once: all five volumes into a scratch Zarr, then copy from there.
        tmp_store = out / f".{name}.render-{uuid.uuid4().hex[:8]}.zarr"
        out.mkdir(parents=True, exist_ok=True)
        stack = da.stack([arrays[k].astype(np.float32) for k in CHANNELS])
        stack.to_zarr(str(tmp_store), overwrite=True)
        stored = da.from_zarr(str(tmp_store))
        arrays = {k: stored[i] for i, k in enumerate(CHANNELS)}
    try:
        vols = {}
        for k, a in arrays.items():
            dt = np.float32 if k == "tomogram" else DTYPES[k]
            data = a.astype(dt) if isinstance(a, da.Array) else np.asarray(a, dtype=dt)
            vols[k] = make_volume(data, sim.voxel_size, name=VOLUMES.get(k, "tomogram"),
                                  chunks=None if isinstance(data, da.Array) else 128)
        if fmt == "mrc":
            write_mrc(vols["tomogram"], paths["tomogram"], overwrite=overwrite)
            for k in VOLUMES:
                write_mrc(vols[k], paths[k], overwrite=overwrite)
        else:
            with atomic_path(paths["tomogram"], overwrite=overwrite) as tmp:
                write_ome_zarr(vols["tomogram"], tmp, levels=3, attrs={"simulation": name})
                for k, label in VOLUMES.items():
                    write_ome_zarr(vols[k], tmp, group=f"labels/{label}", levels=1, label=True)
    finally:
        if tmp_store is not None:
            shutil.rmtree(tmp_store, ignore_errors=True)
    write_table(sim.table, paths["table"], overwrite=overwrite)
    _write_csv(sim.filaments, paths["filaments"])
    _write_csv(sim.fiducials, paths["fiducials"])
    meta = {
        "name": name, "seed": sim.seed, "voxel_size": sim.voxel_size, "shape": list(sim.shape),
        "class_ids": sim.class_ids, "compartment_ids": sim.compartment_ids,
        "density_sign": "protein dark (negative) in the tomogram; labels are the truth",
        "n_particles": int(len(sim.table)),
        "counts": {str(k): int(v) for k, v in sim.table["class"].value_counts().items()},
        "n_filaments": int(sim.filaments["filament"].nunique()) if len(sim.filaments) else 0,
        "files": {k: str(p.relative_to(out)) for k, p in paths.items() if k in arrays or k in
                  ("tomogram", "table", "filaments", "fiducials", "meta")},
        "params": sim.params,
    }
    with atomic_path(paths["meta"], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=_json_default))
    return paths


def _write_csv(df, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def series_names(prefix: str, seed: int, n: int) -> list[str]:
    """Names of a series of ``n`` tomograms: ``PREFIX_<seed>`` with seeds ``seed .. seed+n-1``."""
    return [f"{prefix}_{seed + i:04d}" for i in range(n)]


def write_series(out_dir, n: int = 1, *, shape=(128, 256, 256), voxel_size: float = 13.48, seed: int = 0,
                 preset: str = "cell", imaging: str = "defocus", fmt: str = "mrc", prefix: str = "sim",
                 overrides: dict | None = None, blockwise: bool | None = None, chunks: int = 128,
                 preview: bool = False, overwrite: bool = False,
                 on_written: Callable[[str, SimulatedTomogram], None] | None = None) -> list[str]:
    """Simulate and write ``n`` tomograms (seeds ``seed ..``) and one ``particles.csv`` of them all.

    Every option is checked, every output path is checked against ``overwrite`` and every scene is
    laid out (placement is cheap) before the first volume is rendered, so a bad option or a volume
    that cannot hold the requested particles fails before anything is written.

    Parameters
    ----------
    out_dir
        Output directory (layout: see this module).
    n, seed, prefix
        Tomogram ``i`` has seed ``seed + i`` and name ``PREFIX_<seed>``.
    shape, voxel_size, preset, imaging, overrides
        What to simulate (see :func:`~deepict_dask.simulate.presets.resolve`).
    fmt, blockwise, chunks, preview
        How to render and write (``preview``: also ``previews/NAME.png``).
    overwrite
        Replace existing outputs (refused otherwise).
    on_written
        Called with each tomogram's name and simulation once it is written.

    Returns
    -------
    list of str
        The tomogram names written.
    """
    import pandas as pd

    from deepict_dask.errors import OutputError
    from deepict_dask.io.coords import write_table

    from .presets import resolve
    from .preview import write_preview
    from .tomogram import plan_tomogram, render_tomogram

    if n < 1:
        raise ConfigError(f"n (the number of tomograms) must be >= 1, got {n}")
    overrides = dict(overrides or {})
    resolve(preset, imaging, overrides)
    out = Path(out_dir)
    names = series_names(prefix, seed, n)
    if not overwrite:
        for name in names:
            for p in output_paths(out, name, fmt).values():
                if p.exists():
                    raise OutputError("already exists (use --overwrite to replace it)", p)
    plans = [plan_tomogram(tuple(shape), voxel_size, seed + i, preset, imaging=imaging, **overrides)
             for i in range(n)]
    tables = []
    for (scene, img), name in zip(plans, names):
        sim = render_tomogram(scene, img, preset=preset, imaging=imaging, name=name, blockwise=blockwise,
                              chunks=chunks)
        write_simulation(sim, out, name, fmt=fmt)
        if preview:
            write_preview(sim, out / "previews" / f"{name}.png")
        tables.append(sim.table)
        if on_written is not None:
            on_written(name, sim)
    write_table(pd.concat(tables, ignore_index=True), out / "particles.csv")
    return names
