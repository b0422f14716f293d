"""A persistent XLA compilation cache by default, so a second launch of the same shapes
starts without compiling.

JAX keeps compiled programs in memory only; its persistent cache (``jax_compilation_cache_dir``)
writes them to disk, keyed by the program, its shapes, the XLA flags and the JAX version, and
a later process loads them instead of compiling again. The ``dibe-jax`` command turns it on
in its entry point, and :func:`~dibe_jax.train.train_and_evaluate` does when nothing has
configured it yet (:func:`enable`):

* location: ``$DIBE_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/dibe_jax/jax``, else
  ``~/.cache/dibe_jax/jax``;
* a cache the user configured (``JAX_COMPILATION_CACHE_DIR``, ``jax.config.update(
  "jax_compilation_cache_dir", ...)``, or the cache turned off with
  ``jax_enable_compilation_cache = False``) is left as it is;
* off: ``dibe-jax --no-compile-cache ...``, or ``DIBE_JAX_CACHE_DIR=off``;
* programs that compile in less than ``jax_persistent_cache_min_compile_time_secs`` are not
  written (JAX's default 1 s; :data:`MIN_COMPILE_SECS` unless the user set
  ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``).

The cache is trusted code: keep it in a folder only you can write to (JAX's warning).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["ENV", "MIN_COMPILE_SECS", "default_dir", "disable", "enable"]

log = logging.getLogger(__name__)

#: The environment variable that places the cache (``off`` turns it off).
ENV = "DIBE_JAX_CACHE_DIR"
#: Programs that compile faster than this are not written (the train and eval steps of a
#: tiny model take a few seconds on a CPU, the small helper programs milliseconds).
MIN_COMPILE_SECS = 0.5
_OFF = ("off", "none", "0", "false")


def default_dir() -> Path | None:
    """Where the cache goes: ``$DIBE_JAX_CACHE_DIR``, else the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/dibe_jax/jax``; None when
    ``DIBE_JAX_CACHE_DIR=off``."""
    value = os.environ.get(ENV)
    if value is not None and value.strip():
        if value.strip().lower() in _OFF:
            return None
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "dibe_jax" / "jax"


def enable(directory: str | Path | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``directory`` (default
    :func:`default_dir`), unless the user configured the cache already; return the folder
    in use (None: off). Safe to call many times; a global JAX setting, so only entry points
    and :func:`~dibe_jax.train.train_and_evaluate` call it."""
    import jax

    if not jax.config.jax_enable_compilation_cache:  # turned off by the user (or disable())
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    path = Path(directory) if directory is not None else default_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a cache is an optimisation: never a reason to fail a run
        log.warning("compile cache: cannot create %s (%s); compiling without it", path, e)
        return None
    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    return path


def disable() -> None:
    """Turn the persistent cache off for this process (``--no-compile-cache``)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
