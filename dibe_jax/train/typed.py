"""Values checked against, and text parsed by, a field's type annotation.

The training config declares every field's type with standard annotations
(:func:`typing.get_type_hints` reads them); this module checks a Python value against such a
type (:func:`matches`), says in words what a type accepts (:func:`describe`) and parses
command-line text into a value of it (:func:`parse`). The types a config uses:

* ``int``, ``float`` (finite; an integer is a number), ``bool``, ``str``, ``None``;
* ``typing.Literal["a", "b"]``: a choice, refused with the allowed values;
* ``list[T]``, ``Sequence[T]``, ``tuple[T, ...]``, ``tuple[T1, T2]`` (a list or a tuple of
  that many items), ``dict[str, T]``; unions (``int | None``); ``Any``;
* ``typing.Annotated[T, "words"]``: the type ``T``, described by ``"words"`` in messages.

>>> from typing import Literal
>>> matches("sgd", Literal["sgd", "adam"]), matches(3, int | None), matches(True, int)
(True, True, False)
>>> describe(Literal["constant", "cosine"] | None)
'one of constant, cosine or none'
>>> parse("[64, 128]", int | tuple[int, int], name="data.image_size")
[64, 128]
"""

from __future__ import annotations

import collections.abc
import json
import math
import numbers
import types
import typing
from typing import Annotated, Any, Literal, get_args, get_origin

from dibe_jax.errors import ConfigError

__all__ = ["choices", "describe", "hints", "matches", "parse"]

_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    type(None): "none",
}
_SEQUENCES = (list, tuple, collections.abc.Sequence)
# Parse order of a union's arms: "1" is an int before it is a bool, "none" is None before
# it is a string, a choice before free text.
_ORDER = {type(None): 0, int: 1, float: 2, bool: 3}


def hints(cls: type) -> dict[str, Any]:
    """Field name -> type of a dataclass (or any class), ``Annotated`` kept."""
    return typing.get_type_hints(cls, include_extras=True)


def _arms(tp: Any) -> tuple[Any, ...]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        return get_args(tp)
    return (tp,)


def choices(tp: Any) -> tuple[Any, ...]:
    """The values of every ``Literal`` in ``tp`` (``()`` if it has none).

    >>> choices(Literal["raise", "skip"])
    ('raise', 'skip')
    """
    out: tuple[Any, ...] = ()
    for arm in _arms(tp):
        if get_origin(arm) is Annotated:
            out += choices(get_args(arm)[0])
        elif get_origin(arm) is Literal:
            out += get_args(arm)
    return out


def matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` is a value of type ``tp`` (see the module docstring).

    Raises:
      TypeError: ``tp`` is an annotation this module does not know (a bug in a declaration,
        not in the value).
    """
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Annotated:
        return matches(value, get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arm) for arm in get_args(tp))
    if origin is Literal:
        return any(type(value) is type(c) and value == c for c in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if tp is str:
        return isinstance(value, str)
    if origin in _SEQUENCES:
        if not isinstance(value, list | tuple):
            return False
        args = get_args(tp) or (Any, ...)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(map(matches, value, args))
        return all(matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        key, item = get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            matches(k, key) and matches(v, item) for k, v in value.items()
        )
    raise TypeError(f"unsupported type annotation {tp!r}")


def describe(tp: Any) -> str:
    """What values of ``tp`` look like, in words, for an error message.

    >>> describe(float | None), describe(list[int])
    ('a number or none', 'a list of integers like [10, 20]')
    """
    if tp in _WORDS:
        return _WORDS[tp]
    if tp is Any:
        return "any value"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return str(args[1])
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 2 else " or ".join(parts)
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in args)
    if origin in _SEQUENCES:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} items like {json.dumps([_example(a) for a in args])}"
        item = args[0] if args else Any
        return f"a list of {_plural(item)} like {json.dumps([_example(item), _example(item, 2)])}"
    if origin is dict or tp is dict:
        return "a mapping"
    return str(tp)


def _plural(tp: Any) -> str:
    words = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
    return words.get(tp, "values")


def _example(tp: Any, k: int = 1) -> Any:
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return {int: 10 * k, float: 0.5 * k, bool: True, str: "text"}.get(tp, None)


def parse(text: str, tp: Any, *, name: str) -> Any:
    """Parse command-line ``text`` as a value of type ``tp`` for field ``name``.

    Booleans are ``true/false``, ``yes/no``, ``on/off`` or ``1/0``; ``none`` or ``null`` is
    None; lists are JSON (``[10, 20]``) or comma-separated (``10,20``); a choice or a string
    may be quoted (``'tversky'``, as a shell passes it).

    Raises:
      ConfigError: naming ``name``, the text and the type expected.

    >>> parse("5", int, name="epochs"), parse("none", float | None, name="x")
    (5, None)
    >>> parse("two", int, name="epochs")
    Traceback (most recent call last):
    ...
    dibe_jax.errors.ConfigError: epochs: expected an integer, got 'two'
    >>> parse("sdg", Literal["sgd", "adam"], name="optim.name")
    Traceback (most recent call last):
    ...
    dibe_jax.errors.ConfigError: optim.name: expected one of sgd, adam, got 'sdg'
    """
    arms = sorted(_arms(tp), key=lambda a: _ORDER.get(a, 4 + (get_origin(a) is not Literal)))
    for arm in arms:
        try:
            return _parse_arm(text, arm)
        except (ValueError, TypeError):
            continue
    raise ConfigError(f"{name}: expected {describe(tp)}, got {text!r}")


def _unquote(text: str) -> str:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        t = t[1:-1]
    return t


def _parse_arm(text: str, tp: Any) -> Any:
    """One arm of a union; ``ValueError`` if ``text`` is not a value of it."""
    low = text.strip().lower()
    origin = get_origin(tp)
    if origin is Annotated:
        return _parse_arm(text, get_args(tp)[0])
    if tp is type(None):
        if low in ("none", "null"):
            return None
    elif tp is bool:
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
    elif tp is int:
        return int(text.strip())
    elif tp is float:
        value = float(text.strip())
        if math.isfinite(value):
            return value
    elif tp is str:
        return _unquote(text)
    elif origin is Literal:
        for choice in get_args(tp):
            if str(choice) == _unquote(text):
                return choice
    elif tp is Any:
        return _parse_any(text)
    else:
        t = text.strip()
        value = json.loads(t if t.startswith(("[", "{")) else f"[{t}]")  # 10,20 -> [10, 20]
        if matches(value, tp):
            return value
    raise ValueError(text)


def _parse_any(text: str) -> Any:
    """Text without a declared type: none, a bool, JSON (numbers, lists), else the string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text.strip())
    except json.JSONDecodeError:
        return _unquote(text)
