"""Writing files so that a reader, or a killed process, never sees half of one.

:func:`atomic_write_text` is the one atomic write of the project: the text goes to a
temporary file in the same folder, is flushed to disk, then moved over the target with
:func:`os.replace`, so a reader sees the old file or the new one; the temporary file is
removed if writing fails.

Permissions are those of a file created with :func:`open`: ``0o666`` less the process's
umask (``0o644`` under the usual umask ``022``, so colleagues can read the results), not the
``0o600`` that :func:`tempfile.mkstemp` gives its temporary files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc``); else
    by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0o600 -> what open() would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.txt"
    >>> atomic_write_text(p, "hi\\n").read_text()
    'hi\\n'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (and a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str) + "\n")
