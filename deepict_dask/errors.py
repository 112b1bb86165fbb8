"""User-facing errors.

Every problem caused by the user's input (a file, a config key, an option) is raised as a
:class:`DeepictError`. The CLI prints its message on one line and exits non-zero, without a
traceback; library users can catch it. Name the file (or key) and say what is wrong.
"""

from __future__ import annotations

from os import PathLike


class DeepictError(Exception):
    """A problem with the user's input, reported as one clear message."""

    def __init__(self, message: str, path: str | PathLike | None = None):
        self.path = None if path is None else str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(DeepictError):
    """An input file is missing, unreadable, corrupt or of the wrong kind."""


class VoxelSizeUnset(InputError):
    """A file whose voxel size is 0, NaN or negative: the caller must state the voxel size."""


class ConfigError(DeepictError):
    """A configuration file or option has an unknown key or a bad value."""


class OutputError(DeepictError):
    """An output cannot be written (exists, no permission, full disk)."""
