"""Resolve the configured inputs into named tomograms and check them before any heavy work.

Everything here is cheap (globs, headers, file stats), so a run with a bad input list, mixed voxel
sizes or an unwritable output directory stops in seconds with one message listing every problem.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepict_dask.errors import ConfigError, InputError, OutputError, VoxelSizeUnset
from deepict_dask.io import tomogram_name
from deepict_dask.pipeline.config import RunConfig
from deepict_dask.pipeline.manifest import Manifest, file_fingerprint

MIN_FREE_BYTES = 256 * 2**20
log = logging.getLogger(__name__)


@dataclass
class InputTomogram:
    name: str
    path: Path
    fingerprint: dict[str, Any]
    header: dict[str, Any]
    truth: Path | None = None
    problem: str | None = None  # unreadable: reported as a failure of this tomogram, others go on


def _manifest_paths(path: Path) -> list[str]:
    """A manifest file: one path per line (``#`` comments), or a CSV/TSV with a ``path`` column."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read input manifest: {exc.strerror}", path) from exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and path.suffix.lower() in (".csv", ".tsv"):
        import pandas as pd

        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", comment="#")
        if "path" not in df.columns:
            raise ConfigError(f"input manifest needs a 'path' column, found {list(df.columns)}", path)
        lines = [str(p) for p in df["path"]]
    base = path.parent
    return [str(p if Path(p).is_absolute() else base / p) for p in lines]


def expand_inputs(config: RunConfig) -> list[Path]:
    """The input files in a stable order; a pattern matching nothing is an error naming it."""
    patterns = list(config.inputs.paths)
    if config.inputs.manifest:
        patterns += _manifest_paths(Path(config.inputs.manifest))
    found: list[Path] = []
    empty: list[str] = []
    for pat in patterns:
        if glob.has_magic(pat):
            hits = sorted(glob.glob(pat))
            if not hits:
                empty.append(pat)
            found += [Path(h) for h in hits]
        elif Path(pat).exists():
            found.append(Path(pat))
        else:
            empty.append(pat)
    if empty:
        raise InputError(f"inputs match nothing: {', '.join(empty)}")
    if not found:
        raise InputError("no input tomograms given")
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    paths = list(unique)
    names: dict[str, list[Path]] = {}
    for p in paths:
        names.setdefault(tomogram_name(p), []).append(p)
    clashes = {n: ps for n, ps in names.items() if len(ps) > 1}
    if clashes:
        detail = "; ".join(f"{n}: {', '.join(map(str, ps))}" for n, ps in clashes.items())
        raise InputError(f"several inputs have the same tomogram name (rename them): {detail}")
    return paths


def read_header(path: Path, voxel_size: float | None = None) -> dict[str, Any]:
    """Voxel size and shape of a tomogram without reading its data.

    A file whose header has no voxel size (0, NaN, negative) gets ``voxel_size`` (the config's
    ``inputs.voxel_size``), recorded as ``voxel_size_given`` so that convert uses it too; without
    one it is refused rather than guessed.
    """
    from deepict_dask.io import open_volume, spatial_shape, voxel_size_of

    given = False
    try:
        vol = open_volume(path)
    except VoxelSizeUnset as exc:
        if voxel_size is None:
            raise VoxelSizeUnset(f"{exc.problem.split(';')[0]}; set inputs.voxel_size in the run config",
                                 path) from exc
        vol, given = open_volume(path, voxel_size=voxel_size), True
    header = {"voxel_size": list(voxel_size_of(vol)), "shape": list(spatial_shape(vol)), "dtype": str(vol.dtype)}
    return {**header, "voxel_size_given": True} if given else header


def check_output_dir(run_dir: Path) -> None:
    """Create the run directory and prove that it takes a file; refuse a (nearly) full disk."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory: {exc.strerror}", run_dir) from exc
    probe = run_dir / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"output directory is not writable: {exc.strerror}", run_dir) from exc
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise OutputError(f"only {free / 2**20:.0f} MiB free on the output disk", run_dir)


def collect_inputs(config: RunConfig, manifest: Manifest) -> list[InputTomogram]:
    """Find the tomograms, read their headers (cached in the manifest), check voxel sizes.

    An unreadable tomogram is kept with its ``problem`` (reported as failed, the others go on).
    Voxel sizes outside the tolerance are an error listing every offending file.
    """
    tomos: list[InputTomogram] = []
    for path in expand_inputs(config):
        name = tomogram_name(path)
        fp = file_fingerprint(path)
        record = manifest.load(name)
        header = record.header if record.header.get("fingerprint") == fp else {}
        if header.get("voxel_size_given") and header.get("voxel_size") != [config.inputs.voxel_size] * 3:
            header = {}  # the cached voxel size came from the config, which now says another (or none)
        problem = None
        if not header:
            try:
                header = {**read_header(path, config.inputs.voxel_size), "fingerprint": fp}
            except InputError as exc:
                problem = str(exc)
            except Exception as exc:  # any reader failure makes this one tomogram unusable
                problem = f"{path}: cannot read: {type(exc).__name__}: {exc}"
        tomos.append(InputTomogram(name, path, fp, header, truth_for(config.inputs.truth, name), problem))
    if config.inputs.truth:
        warn_missing_truth(config.inputs.truth, tomos)
    check_voxel_sizes(config, tomos)
    return tomos


def truth_for(pattern: str | None, name: str) -> Path | None:
    """The ground-truth table of tomogram ``name``: ``{name}`` replaced, then a glob if it has wildcards.

    ``None`` when the pattern matches no file (or several), so that nothing downstream uses it.
    """
    if not pattern:
        return None
    text = pattern.replace("{name}", name)
    hits = sorted(glob.glob(text)) if glob.has_magic(text) else [text] if os.path.exists(text) else []
    return Path(hits[0]) if len(hits) == 1 else None


def warn_missing_truth(pattern: str, tomos: list[InputTomogram]) -> list[str]:
    """Say which tomograms ``inputs.truth`` finds no table for: they silently went unevaluated before."""
    missing = [t.name for t in tomos if t.truth is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        log.warning("inputs.truth %s matches no file (or several) for %d of %d tomograms (%s): they are not "
                    "evaluated", pattern, len(missing), len(tomos), shown)
    return missing


def check_voxel_sizes(config: RunConfig, tomos: list[InputTomogram]) -> None:
    readable = [t for t in tomos if t.problem is None]
    if not readable:
        return
    expected = config.inputs.voxel_size
    if expected is None:
        expected = float(readable[0].header["voxel_size"][-1])
        ref = f"{expected:g} A of the first input {readable[0].path.name}"
    else:
        ref = f"the expected {expected:g} A"
    tol = config.inputs.voxel_size_tolerance
    bad = []
    for t in readable:
        vs = [float(v) for v in t.header["voxel_size"]]
        if max(abs(v - expected) / expected for v in vs) > tol:
            bad.append(f"{t.path}: {'x'.join(f'{v:g}' for v in vs)} A")
    if bad:
        raise InputError(
            f"voxel sizes differ from {ref} by more than {100 * tol:g}%: " + "; ".join(bad)
            + " (set inputs.voxel_size / voxel_size_tolerance, or run such tomograms separately)"
        )
