"""Atomic outputs: write under a temporary name next to the target, rename when complete.

A run that fails or is killed therefore never leaves an output that looks finished; the temporary
name (``.<name>.tmp-<random>``) is removed on error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from deepict_dask.errors import OutputError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target``.

    Works for files and directories (Zarr stores). With ``overwrite=False`` an existing target is
    an :class:`OutputError`. An existing target is only replaced once the new output is complete.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError("already exists (use --overwrite to replace it)", target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory: {exc.strerror}", parent) from exc
    if not os.access(parent, os.W_OK):
        raise OutputError("output directory is not writable", parent)
    tmp = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        return
    old = None
    if target.exists():
        old = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        if old is not None:
            os.replace(old, target)
        _remove(tmp)
        raise OutputError(f"cannot move finished output into place: {exc.strerror}", target) from exc
    if old is not None:
        _remove(old)
