"""Per-tomogram completion records: what finished, with which settings and inputs.

One JSON file per tomogram under ``RUN_DIR/manifest/``. For every stage it keeps the stage's
*hash* (config section + hashes of its inputs + stage version), the outputs it wrote, its wall
time, a small result (e.g. counts per class) and a summary of each output's *inventory* (digest,
bytes, per Zarr array shape, dtype and chunk count). The inventory's per-file list (every chunk
file's size and hash; thousands per array for a large tomogram) goes to its own file,
``manifest/<tomogram>.files/<stage>.json``, so the records stay small.

A stage is skipped on a re-run only when its hash is unchanged *and* its outputs are intact: every
recorded file present with its recorded size (one stat per file, no reads), or with ``--verify``
every file re-hashed. Only the orchestrating process writes these files (atomically), so workers
never race on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.io.checksum import check_contents, check_sizes, inventory_digest
from deepict_dask.layout import RunLayout

MANIFEST_VERSION = 2  # 2: output inventories (records of version 1 are recomputed)


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
    inventory: dict[str, dict[str, Any]] = field(default_factory=dict)  # output -> digest, bytes, arrays

    def valid_for(self, stage_hash: str) -> bool:
        """Same hash and every output present (run-level records, which have no inventory)."""
        return self.hash == stage_hash and all(output_exists(o) for o in self.outputs)


@dataclass
class TomoManifest:
    """Completion records of one tomogram (plus the last failure, if any)."""

    name: str
    source: str = ""
    header: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    files_dir: Path | None = None  # where the per-file inventories live (not part of the JSON)

    def damage(self, stage: str, *, deep: bool = False) -> str | None:
        """What is wrong with a recorded stage's outputs, or None when they are intact.

        The cheap check stats every recorded file; ``deep`` re-hashes them all (``--verify``).
        """
        rec = self.stages[stage]
        for out in rec.outputs:
            if not output_exists(out):
                return f"{out} is missing"
        if not rec.inventory:
            return None
        lists = _read_file_lists(self.files_dir, stage)
        for out, summary in rec.inventory.items():
            entries = lists.get(out)
            if entries is None or inventory_digest(entries) != summary.get("digest"):
                return f"{out}: its file inventory is missing or does not match the manifest"
            problem = (check_contents if deep else check_sizes)(out, entries)
            if problem is not None:
                return f"{out}: {problem}"
        return None

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
        self.layout = RunLayout(run_dir)
        self.dir = self.layout.manifest_dir

    def path(self, name: str) -> Path:
        return self.layout.manifest_file(name)

    def files_dir(self, name: str) -> Path:
        return self.layout.inventory_dir(name)

    def load(self, name: str) -> TomoManifest:
        p = self.path(name)
        fresh = TomoManifest(name=name, files_dir=self.files_dir(name))
        if not p.exists():
            return fresh
        try:
            data = json.loads(p.read_text())
            if data.get("version") != MANIFEST_VERSION:
                return fresh
            tomo = TomoManifest.from_json(data)
        except (OSError, ValueError, KeyError, TypeError):
            # An unreadable record only costs a recomputation; never trust it.
            return fresh
        tomo.files_dir = fresh.files_dir
        return tomo

    def save(self, tomo: TomoManifest) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # no directory scan per save (one entry per tomogram: O(N) each); the run removes leftovers at its start
        with atomic_path(self.path(tomo.name), sweep=False) as tmp:
            tmp.write_text(json.dumps(tomo.to_json(), indent=1, default=str))

    def record(self, tomo: TomoManifest, stage: str, stage_hash: str, result: dict[str, Any]) -> None:
        """Record a finished stage (``result`` as returned by the stage task) and save.

        The per-file lists of ``result["inventory"]`` are saved first, then the record that points
        to them by digest: a crash in between leaves a record that no longer matches (recomputed).
        """
        inventories = dict(result.get("inventory", {}))
        if inventories:
            self.dir.mkdir(parents=True, exist_ok=True)
            lists = {out: inv["files"] for out, inv in inventories.items()}
            with atomic_path(_file_list_path(self.files_dir(tomo.name), stage)) as tmp:
                tmp.write_text(json.dumps(lists, separators=(",", ":")))
        tomo.stages[stage] = StageRecord(
            hash=stage_hash,
            outputs=[str(o) for o in result.get("outputs", [])],
            seconds=float(result.get("seconds", 0.0)),
            result=dict(result.get("result", {})),
            finished=time.time(),
            inventory={out: {k: v for k, v in inv.items() if k != "files"} | {"files": len(inv["files"])}
                       for out, inv in inventories.items()},
        )
        self.save(tomo)


def _file_list_path(files_dir: Path, stage: str) -> Path:
    return files_dir / f"{quote(stage, safe='')}.json"


def _read_file_lists(files_dir: Path | None, stage: str) -> dict[str, list[list[Any]]]:
    """The per-file inventories of one stage's outputs (empty when missing or unreadable)."""
    if files_dir is None:
        return {}
    try:
        data = json.loads(_file_list_path(files_dir, stage).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
