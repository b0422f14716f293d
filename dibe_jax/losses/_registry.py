"""Name -> loss registry used by the training code and the CLI."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax

LossFn = Callable[..., jax.Array]

# Keyword arguments every loss takes that are not hyperparameters.
_NON_HYPER = frozenset({"where", "pool_batch", "axis_name"})


class Entry(NamedTuple):
    fn: LossFn
    description: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, fn: LossFn, description: str) -> None:
    """Add ``fn`` under ``name`` with a one-line description (names are unique)."""
    if name in _REGISTRY:
        raise ValueError(f"loss {name!r} is already registered")
    _REGISTRY[name] = Entry(fn, description)


def names() -> list[str]:
    """Sorted names of every registered loss."""
    return sorted(_REGISTRY)


def get(name: str) -> LossFn:
    """The loss registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name].fn
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(names())}") from None


def describe(name: str) -> str:
    """One-line description of a registered loss."""
    get(name)
    return _REGISTRY[name].description


def hyperparameters(name: str) -> dict[str, object]:
    """The loss's keyword-only hyperparameters and their defaults (no ``where``/pooling)."""
    sig = inspect.signature(get(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _NON_HYPER
    }


def check_hyperparameters(name: str, values: dict[str, object]) -> None:
    """``ValueError`` naming any key of ``values`` that loss ``name`` does not take."""
    allowed = hyperparameters(name)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss {name!r} takes no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(allowed) or 'none'}"
        )
