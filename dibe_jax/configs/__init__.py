"""The paper's settings as config files, selectable by name: ``--config cfd_unet_dibe``.

Each module here is a config in the style of the Flax examples and big_vision: one
``get_config()`` whose docstring says what it reproduces, the command that runs it and the
result to expect. ``dibe-jax configs`` lists them; ``dibe-jax train --config NAME`` (or a
path to a ``.py`` file of the same form, or a run's ``config.json``) starts from one, and
``--config.loss.alpha=0.7`` (or ``--set loss.alpha=0.7``) changes a field, typed.

``get_config()`` returns the typed :class:`dibe_jax.train.Config` itself, not an
``ml_collections.ConfigDict`` converted to it: the dataclasses' annotations are the one
schema (a choice is a ``typing.Literal`` refused with its allowed values, a number is
checked as a number), an editor completes and checks the field names, and nothing has to
be kept in step with a second description of the same fields or installed for it. A
ConfigDict accepts any new key, and so does a plain dataclass instance; here every
``get_config()`` result is checked field by field, attributes included, so a typo at any
level (``c.epoch = 1`` for ``c.epochs``) is refused in one line, as an unknown ``--set``
key is. A file of one's own may also return a dict of the fields or a ConfigDict (anything
with ``to_dict()``): it is converted and checked the same way.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from dibe_jax.errors import ConfigError

__all__ = ["describe", "get", "load", "names"]


def names() -> tuple[str, ...]:
    """The shipped configs, sorted (module names; private ones start with ``_``)."""
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    )


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"--config {name}: no shipped config of that name and no such file; shipped: "
        f"{', '.join(names())} (`dibe-jax configs` lists them)"
    )


def _module(name: str):
    if name not in names():
        raise _unknown(name)
    return importlib.import_module(f"{__name__}.{name}")


def describe(name: str) -> str:
    """The first line of ``name``'s docstring: what it reproduces."""
    doc = _module(name).get_config.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def get(name: str):
    """The :class:`~dibe_jax.train.Config` of the shipped config ``name``, checked."""
    from dibe_jax.train.config import from_get_config

    return from_get_config(_module(name).get_config(), where=f"--config {name}")


def load(spec: str | Path):
    """A config by shipped name (``cfd_unet_dibe``) or by path (``.py`` with ``get_config()``
    or a run's ``config.json``, :func:`dibe_jax.train.load`).

    Raises:
      ConfigError: an unknown name, a missing or invalid file (one line).
    """
    from dibe_jax.train.config import load as load_file

    text = str(spec)
    if text in names():
        return get(text)
    if Path(text).suffix in (".py", ".json") or Path(text).exists():
        return load_file(text)
    raise _unknown(text)
