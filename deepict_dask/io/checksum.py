"""File checksums, used to record exactly which model or target file produced an output."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from deepict_dask.errors import InputError

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
