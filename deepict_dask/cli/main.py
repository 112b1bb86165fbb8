"""The ``deepict`` command: a thin shell over the Python API.

Every module in :mod:`deepict_dask.cli` that defines ``register(subparsers)`` becomes a subcommand,
so adding a command means adding one small module. ``register`` adds a parser and sets
``func=run`` on it; ``run(args) -> int`` does the work (import heavy libraries inside ``run`` so
that ``deepict --help`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from deepict_dask import __version__
from deepict_dask.errors import DeepictError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepict",
        description="Find molecules and cellular structures in cryo-electron tomograms, on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"deepict-dask {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import deepict_dask.cli as cli_pkg

    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"deepict_dask.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


class _CommandFormatter(logging.Formatter):
    """Warnings read like errors, ``deepict CMD: warning: ...``, so every message names its command."""

    def __init__(self, command: str | None):
        super().__init__()
        self.prefix = f"deepict {command}" if command else "deepict"

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.prefix}: {record.levelname.lower()}: {record.getMessage()}"
        return f"{text}\n{self.formatException(record.exc_info)}" if record.exc_info else text


def _setup_logging(command: str | None, verbose: int) -> None:
    """One line per warning on stderr; ``-v``/``-vv`` add info/debug lines with the logger's name."""
    level = logging.WARNING - 10 * min(verbose, 2)
    if verbose:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_CommandFormatter(command))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.command, args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DeepictError as exc:
        print(f"deepict {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepict {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
