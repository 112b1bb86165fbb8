"""Compute dask collections on the current scheduler, with a progress bar when asked for.

Library calls stay quiet; a command wraps its work in ``with show_progress():`` so that long
computations show ``distributed.progress`` (on a distributed client) or dask's text bar. Bars go to
standard error, so that standard output carries only results (and can be piped or parsed).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any

import dask

_SHOW = contextvars.ContextVar("deepict_show_progress", default=False)


@contextlib.contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Show a progress bar for every :func:`compute` inside the block."""
    token = _SHOW.set(enabled)
    try:
        yield
    finally:
        _SHOW.reset(token)


def _client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute(*collections: Any) -> tuple[Any, ...]:
    """Like ``dask.compute`` but shows progress inside :func:`show_progress`."""
    if not _SHOW.get():
        return dask.compute(*collections)
    client = _client()
    if client is not None:
        from distributed import progress

        futures = client.compute(list(collections))
        with contextlib.redirect_stdout(sys.stderr):  # distributed's text bar writes to stdout
            progress(futures)
        print(file=sys.stderr, flush=True)
        return tuple(client.gather(futures))
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        return dask.compute(*collections)
