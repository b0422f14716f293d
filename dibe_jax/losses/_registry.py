"""Name -> loss registry used by the training code and the CLI.

Each entry knows its loss's **kind**, what its logits are and what it returns, and which
**labels** it takes, so a trainer can build the right head and step and a config check can
refuse a loss that cannot run on a dataset before anything compiles:

* ``binary``: sigmoid logits ``[B, *spatial]`` or ``[B, *spatial, 1]`` -> ``[B]``; the
  trainer builds one output channel;
* ``multiclass``: softmax logits ``[B, *spatial, C]`` -> ``[B]``; C output channels;
* ``mc_dropout``: ``T`` Monte-Carlo dropout passes ``[T, B, *spatial, C]`` -> ``[B]``; the
  training step runs the network ``T`` times (CDFL);
* ``batch``: one scalar for the whole batch (PF-loss); the step uses it as it is.

Labels: ``binary`` (``{0, 1}`` masks of the logits' shape), ``class_ids`` (``[B, *spatial]``
integers in ``[0, C)``), ``one_hot`` (one-hot or soft ``[B, *spatial, C]``). A loss trains on
a binary dataset (2 classes) if it takes ``binary`` labels, on a multi-class one (3 classes or
more) if it takes ``class_ids``. ``step_options`` are settings of the training step rather than
of the loss function (the number ``T`` of dropout passes of ``mc_dropout`` losses); they live
in ``loss.params`` next to the hyperparameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

LossFn = Callable[..., jax.Array]

# Keyword arguments every loss takes that are not hyperparameters.
_NON_HYPER = frozenset({"where", "pool_batch", "axis_name"})

#: Each kind: what the loss takes and returns.
KINDS: dict[str, str] = {
    "binary": "binary, sigmoid logits [B, *spatial(, 1)] -> [B]",
    "multiclass": "multi-class, softmax logits [B, *spatial, C] -> [B]",
    "mc_dropout": "T Monte-Carlo dropout passes [T, B, *spatial, C] -> [B]",
    "batch": "one scalar for the whole batch",
}
#: Each kind of labels.
LABELS: dict[str, str] = {
    "binary": "{0, 1} masks of the logits' shape",
    "class_ids": "class ids [B, *spatial] in [0, C)",
    "one_hot": "one-hot or soft labels [B, *spatial, C]",
}
#: Datasets: "binary" (2 classes, one sigmoid output) and "multiclass" (C >= 3, softmax).
TASKS = ("binary", "multiclass")


class Entry(NamedTuple):
    """A registered loss (see the module docstring for ``kinds`` and ``labels``)."""

    fn: LossFn
    description: str
    kinds: tuple[str, ...]
    labels: tuple[str, ...]
    step_options: Mapping[str, Any]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The datasets it trains on: ``"binary"`` and/or ``"multiclass"``."""
        return tuple(
            t for t, lab in zip(TASKS, ("binary", "class_ids"), strict=True) if lab in self.labels
        )

    @property
    def batch(self) -> bool:
        """Whether it returns one scalar for the batch rather than ``[B]``."""
        return "batch" in self.kinds


_REGISTRY: dict[str, Entry] = {}


def register(
    name: str,
    fn: LossFn,
    description: str,
    *,
    kinds: tuple[str, ...] = ("binary",),
    labels: tuple[str, ...] = ("binary",),
    step_options: Mapping[str, Any] | None = None,
) -> None:
    """Add ``fn`` under ``name`` with a one-line description (names are unique).

    Args:
      name: the registry name.
      fn: ``fn(logits, labels, *, hyperparameters, where, pool_batch, axis_name)``.
      description: one line for ``dibe-jax losses``.
      kinds: keys of :data:`KINDS` (``("binary", "multiclass")`` for a loss that routes
        sigmoid and softmax logits).
      labels: keys of :data:`LABELS`.
      step_options: settings of the training step and their defaults (``{"mc_samples": 5}``).
    """
    if name in _REGISTRY:
        raise ValueError(f"loss {name!r} is already registered")
    for arg, given, known in (("kinds", kinds, KINDS), ("labels", labels, LABELS)):
        bad = [k for k in given if k not in known]
        if not given or bad:
            raise ValueError(f"{arg} of loss {name!r} must be some of {', '.join(known)}")
    _REGISTRY[name] = Entry(fn, description, tuple(kinds), tuple(labels), dict(step_options or {}))


def info(name: str) -> Entry:
    """The registry entry of ``name``: function, description, kinds, labels, step options,
    and the datasets it trains on (``.tasks``); ``ValueError`` for an unknown name."""
    get(name)
    return _REGISTRY[name]


_SHORT_KINDS = {
    "binary": "binary [B]",
    "multiclass": "multi-class [B]",
    "mc_dropout": "MC dropout [T, B, ..., C] -> [B]",
    "batch": "batch scalar",
}
_SHORT_LABELS = {"binary": "{0, 1} masks", "class_ids": "class ids", "one_hot": "one-hot"}


def describe_kind(name: str, *, short: bool = False) -> str:
    """One line for people: ``"multi-class, softmax logits [B, *spatial, C] -> [B]; labels:
    class ids [B, *spatial] in [0, C) or one-hot ..."``; ``short``: ``"multi-class [B];
    labels: class ids or one-hot"``.

    >>> describe_kind("bce", short=True)
    'binary [B]; labels: {0, 1} masks'
    """
    e = info(name)
    kinds, labels = (_SHORT_KINDS, _SHORT_LABELS) if short else (KINDS, LABELS)
    what = " | ".join(kinds[k] for k in e.kinds)
    return f"{what}; labels: {' or '.join(labels[k] for k in e.labels)}"


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


def step_options(name: str) -> dict[str, Any]:
    """Settings of the training step that loss ``name`` needs, with their defaults
    (``{"mc_samples": 5}`` for Monte-Carlo dropout losses, else ``{}``)."""
    return dict(info(name).step_options)


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
