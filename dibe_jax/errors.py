"""The exception every user mistake raises.

:class:`UserError` means the request was wrong (a flag, a config value, a name, a file, a
checkpoint, a dataset folder), not the code: the ``dibe-jax`` command prints its first line
as ``dibe-jax: error: ...`` and exits with status 2. Every other exception is a bug and is
shown with its traceback and a line saying it is a bug to report (status 1). The library's
specific errors derive from it: :class:`ConfigError`, :class:`DatasetFileError`,
:class:`RunNotFoundError` (here), ``CheckpointError`` (:mod:`dibe_jax.train.checkpoints`)
and ``SearchError`` (:mod:`dibe_jax.tuning`).

It derives from :class:`ValueError` so that code catching ``ValueError`` for bad arguments
keeps working.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DatasetFileError", "RunNotFoundError", "UserError"]


class UserError(ValueError):
    """A request the user can fix: the message names the argument and what was expected."""


class DatasetFileError(UserError):
    """A source file of a dataset is missing, unreadable or inconsistent.

    The message always starts with the offending path (or the folder that lacks it)
    and says what is wrong.
    """


class ConfigError(UserError):
    """A configuration value or name is wrong; the message names the field and what was
    expected (one line)."""


class RunNotFoundError(UserError, FileNotFoundError):
    """A ``--workdir`` that holds no training run (no folder, no ``config.json`` or
    ``model.json``); also a :class:`FileNotFoundError`."""
