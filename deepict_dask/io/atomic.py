"""Atomic outputs: write under a temporary name next to the target, rename when complete.

A run that fails or is killed therefore never leaves an output that looks finished; the temporary
name (``.<name>.tmp-<host>-<pid>-<random>``) is removed on error. What a *killed* writer left
behind is removed by the next write of the same target on the same host (its process is gone).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from deepict_dask.errors import OutputError


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _host_tag() -> str:
    """Short, file-name-safe tag of this host (temporaries on a shared disk say whose they are)."""
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has ``pid`` (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_dead_temporaries(target: str | os.PathLike) -> int:
    """Delete the ``.tmp-``/``.old-`` leftovers of ``target`` whose writer (on this host) is dead."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp|old)-{_host_tag()}-(\d+)-[0-9a-f]+")
    n = 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for e in entries:
        m = pattern.fullmatch(e.name)
        if m and not pid_alive(int(m.group(1))):
            remove_path(Path(e.path))
            n += 1
    return n


def _side_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True, sweep: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target``.

    Works for files and directories (Zarr stores). With ``overwrite=False`` an existing target is
    an :class:`OutputError`. An existing target is only replaced once the new output is complete.
    ``sweep=False`` skips the scan of the parent directory for dead writers' leftovers: for writers
    that save often into a large directory someone else cleans (a run's manifest).
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
    if sweep:
        remove_dead_temporaries(target)
    tmp = _side_name(target, "tmp")
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    if not tmp.exists():
        return
    old = None
    if target.exists():
        old = _side_name(target, "old")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        if old is not None:
            os.replace(old, target)
        remove_path(tmp)
        raise OutputError(f"cannot move finished output into place: {exc.strerror}", target) from exc
    if old is not None:
        remove_path(old)
