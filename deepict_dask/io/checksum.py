"""File checksums: which model or target file produced an output, and what a finished output holds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from deepict_dask.errors import InputError, OutputError

_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks; cached per (path, size, modification time)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _cache:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            _cache[key] = h.hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", path) from exc
    return _cache[key]


# ----------------------------------------------------------------------------------- output inventories
#
# What a finished output holds, recorded when it is written so that a later run can tell a damaged
# output from a finished one: every file (Zarr chunk, metadata, table) with its size and a fast
# content hash, plus per Zarr array its shape, dtype and chunk-file count. Sizes are checked with
# one stat per file (cheap, every run); hashes are re-computed only on request (``--verify``).

ZARR_META = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
_HASH_THREADS = 8


def fast_hash(path: str | os.PathLike) -> str:
    """BLAKE2b (128 bit) of a file's bytes: detects damage at several GB/s, not a security hash."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _zarr_node(path: Path) -> str | None:
    """``"array"``, ``"group"`` or None (not a Zarr node), from the node's own metadata file."""
    if (path / ".zarray").is_file():
        return "array"
    if (path / ".zgroup").is_file():
        return "group"
    meta = path / "zarr.json"
    if meta.is_file():
        import json

        try:
            return str(json.loads(meta.read_text()).get("node_type", "group"))
        except (OSError, ValueError):
            return "array"  # unreadable metadata: hash it like data, so the damage shows
    return None


def _walk_files(root: Path, sub: Path) -> Iterator[str]:
    """Paths (relative to ``root``, ``/``-separated) of every file below ``sub``, unsorted."""
    stack = [sub]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                else:
                    yield Path(e.path).relative_to(root).as_posix()


def output_files(path: str | os.PathLike) -> list[str]:
    """The files that make up an output, relative to it, sorted (``[""]`` for a plain file).

    For a Zarr group: its own metadata and every file of the arrays directly in it. Child *groups*
    are left out: in a run's store they are other stages' outputs (``filtered``, ``labels/...``).
    """
    p = Path(path)
    if not p.is_dir():
        return [""]
    files: list[str] = []
    with os.scandir(p) as it:
        entries = list(it)
    for e in entries:
        if not e.is_dir(follow_symlinks=False):
            files.append(e.name)
        elif _zarr_node(Path(e.path)) != "group":
            files.extend(_walk_files(p, Path(e.path)))
    return sorted(files)


def _arrays(path: Path, files: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Shape, dtype and chunk-file count of each Zarr array directly in ``path``."""
    import json

    counts: dict[str, int] = {}
    for f in files:
        head, _, rest = f.partition("/")
        if rest and rest not in ZARR_META:
            counts[head] = counts.get(head, 0) + 1
    out: dict[str, dict[str, Any]] = {}
    for name, n in sorted(counts.items()):
        info: dict[str, Any] = {"chunks": n}
        for meta in ("zarr.json", ".zarray"):
            try:
                data = json.loads((path / name / meta).read_text())
            except (OSError, ValueError):
                continue
            info["shape"] = data.get("shape")
            info["dtype"] = data.get("data_type", data.get("dtype"))
            break
        out[name] = info
    return out


def inventory_digest(entries: Iterable[Sequence[Any]]) -> str:
    """One digest over ``[relative path, size, hash]`` entries (identifies the whole output)."""
    h = hashlib.blake2b(digest_size=16)
    for rel, size, digest in entries:
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return h.hexdigest()


def inventory(path: str | os.PathLike) -> dict[str, Any]:
    """Inventory of a finished output: ``files`` ([relative path, size, hash]), ``arrays``, totals.

    Hashing reads the output back once (from the page cache right after it was written); files are
    hashed on a few threads (hashlib releases the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    p = Path(path)
    if not p.exists():
        raise OutputError("output was not written", p)
    rels = output_files(p)
    full = [p / r if r else p for r in rels]
    with ThreadPoolExecutor(min(_HASH_THREADS, max(1, len(full)))) as pool:
        hashes = list(pool.map(fast_hash, full))
    entries = [[r, f.stat().st_size, h] for r, f, h in zip(rels, full, hashes)]
    return {
        "digest": inventory_digest(entries),
        "files": entries,
        "bytes": sum(e[1] for e in entries),
        "arrays": _arrays(p, rels) if p.is_dir() else {},
    }


def check_sizes(path: str | os.PathLike, entries: Sequence[Sequence[Any]]) -> str | None:
    """Cheap check (one stat per file, no reads): every recorded file there with its recorded size.

    Returns what is wrong, or None.
    """
    p = Path(path)
    if not p.exists():
        return "missing"
    for rel, size, _ in entries:
        f = p / rel if rel else p
        try:
            actual = f.stat().st_size
        except OSError:
            return f"file {rel or p.name} missing"
        if actual != size:
            return f"file {rel or p.name} has {actual} bytes, {size} recorded"
    return None


def check_contents(path: str | os.PathLike, entries: Sequence[Sequence[Any]]) -> str | None:
    """Full check: re-hash everything and look for files that were not there when it was written."""
    problem = check_sizes(path, entries)
    if problem is not None:
        return problem
    now = inventory(path)["files"]
    recorded = {e[0]: e for e in entries}
    for rel, _size, digest in now:
        if rel not in recorded:
            return f"unexpected file {rel}"
        if recorded[rel][2] != digest:
            return f"file {rel or Path(path).name} changed (content hash differs)"
    return None
