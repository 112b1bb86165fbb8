"""Per-tomogram completion records: what finished, with which settings and inputs.

One JSON file per tomogram under ``RUN_DIR/manifest/``. For every stage it keeps the stage's
*hash* (config section + hashes of its inputs + stage version), the outputs it wrote, its wall
time and a small result (e.g. counts per class). A stage is skipped on a re-run only when its hash
is unchanged *and* every output it recorded is still there; outputs are written atomically, so an
existing output is a finished one. Only the orchestrating process writes these files (atomically),
so workers never race on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path

MANIFEST_VERSION = 1


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_value(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Cheap identity of an input file or directory store: path, size and modification time.

    Content hashing hundreds of multi-GB tomograms on every re-run would cost more than the re-run
    itself; a file that is replaced or edited changes size or mtime.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", p) from exc
    if p.is_dir():
        meta = [m for m in ("zarr.json", ".zattrs", ".zarray", ".zgroup") if (p / m).exists()]
        stamps = [(m, (p / m).stat().st_mtime_ns, (p / m).stat().st_size) for m in meta]
        return {"path": str(p.resolve()), "dir": True, "meta": stamps, "mtime_ns": st.st_mtime_ns}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}




def output_exists(path: str | os.PathLike) -> bool:
    """True when a recorded output is present (a Zarr group counts when its metadata is there)."""
    p = Path(path)
    if p.is_dir():
        return any((p / m).exists() for m in ("zarr.json", ".zattrs", ".zgroup", ".zarray")) or any(p.iterdir())
    return p.is_file()


@dataclass
class StageRecord:
    hash: str
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    finished: float = 0.0

    def valid_for(self, stage_hash: str) -> bool:
        return self.hash == stage_hash and all(output_exists(o) for o in self.outputs)


@dataclass
class TomoManifest:
    """Completion records of one tomogram (plus the last failure, if any)."""

    name: str
    source: str = ""
    header: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)
    failure: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "name": self.name,
            "source": self.source,
            "header": self.header,
            "stages": {k: vars(v) for k, v in self.stages.items()},
            "failure": self.failure,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TomoManifest:
        stages = {k: StageRecord(**v) for k, v in data.get("stages", {}).items()}
        return cls(
            name=data["name"],
            source=data.get("source", ""),
            header=data.get("header", {}),
            stages=stages,
            failure=data.get("failure"),
        )


class Manifest:
    """The manifest directory of one run: ``RUN_DIR/manifest/<tomogram>.json``."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir) / "manifest"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def load(self, name: str) -> TomoManifest:
        p = self.path(name)
        if not p.exists():
            return TomoManifest(name=name)
        try:
            data = json.loads(p.read_text())
            if data.get("version") != MANIFEST_VERSION:
                return TomoManifest(name=name)
            return TomoManifest.from_json(data)
        except (OSError, ValueError, KeyError, TypeError):
            # An unreadable record only costs a recomputation; never trust it.
            return TomoManifest(name=name)

    def save(self, tomo: TomoManifest) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(tomo.name)) as tmp:
            tmp.write_text(json.dumps(tomo.to_json(), indent=1, default=str))

    def record(self, tomo: TomoManifest, stage: str, stage_hash: str, result: dict[str, Any]) -> None:
        """Record a finished stage (``result`` as returned by the stage task) and save."""
        tomo.stages[stage] = StageRecord(
            hash=stage_hash,
            outputs=[str(o) for o in result.get("outputs", [])],
            seconds=float(result.get("seconds", 0.0)),
            result=dict(result.get("result", {})),
            finished=time.time(),
        )
        self.save(tomo)
