"""Reducers: how a delta for a key is combined with the key's current value.

A reducer is a pure function ``(current, value) -> new``. ``current`` is ``None`` when the key
is not in the state yet. Reducers must be deterministic: restoring a checkpoint replays the
recorded deltas through them.

The built-in ``append`` and ``merge`` may also update the run's own copy in place (the
executor copies the initial value once, so a caller's objects are never mutated); that keeps a
step's cost proportional to the change, not to the size of the state.

``append`` and ``union`` treat their two sides alike: a list or tuple (for ``union`` also a set)
holds items, anything else (a str, bytes, a dict, a number) is one item. A custom reducer can be
given a stable name with :func:`register` or :func:`named`; the name is recorded in checkpoints,
so a process that did not build the graph (a CLI, a web server) can restore the run's state
after registering the same function under the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = (
    "add",
    "append",
    "merge",
    "name_of",
    "named",
    "overwrite",
    "register",
    "registered",
    "union",
)


def overwrite(current: Any, value: Any) -> Any:
    """Replace the current value (the default for keys with no reducer)."""
    return value


def append(current: Any, value: Any) -> list[Any]:
    """Append to a list; a list or tuple extends it, any other value is one item.

    The same holds for ``current``: a scalar current value becomes the first item.
    """
    # A scalar current value (say an initial ``"hello"``) is one item, never split into chars.
    if current is None:
        base = []
    elif isinstance(current, list | tuple):
        base = list(current)
    else:
        base = [current]
    if isinstance(value, list | tuple):
        base.extend(value)
    else:
        base.append(value)
    return base


def merge(current: Mapping[str, Any] | None, value: Mapping[str, Any]) -> dict[str, Any]:
    """Update a dict with the keys of the value (shallow)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"merge expects a mapping, got {type(value).__name__}")
    base = dict(current) if current is not None else {}
    base.update(value)
    return base


def add(current: float | None, value: float) -> float:
    """Add numbers; a missing key counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"add expects a number, got {type(value).__name__}")
    return (current or 0) + value


def union(current: Any, value: Any) -> list[Any]:
    """Set union kept as a sorted list (so it encodes and compares deterministically).

    A list, tuple or set (on either side) holds items; any other value is one item.
    """
    if current is None:
        items: set[Any] = set()
    elif isinstance(current, list | tuple | set | frozenset):
        items = set(current)
    else:
        items = {current}  # a scalar current value is one item, never split into chars
    if isinstance(value, list | tuple | set | frozenset):
        items.update(value)
    else:
        items.add(value)
    return sorted(items)


def _append_inplace(current: list[Any], value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        current.extend(value)
    else:
        current.append(value)
    return current


def _merge_inplace(current: dict[str, Any], value: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"merge expects a mapping, got {type(value).__name__}")
    current.update(value)
    return current


#: In-place twins of the built-in reducers, used on values the run owns (see module docstring).
INPLACE: dict[Callable[..., Any], tuple[Callable[..., Any], type]] = {
    append: (_append_inplace, list),
    merge: (_merge_inplace, dict),
}

#: Stable names for the structural graph hash.
BUILTIN_NAMES: dict[Callable[..., Any], str] = {
    overwrite: "overwrite",
    append: "append",
    merge: "merge",
    add: "add",
    union: "union",
}


#: Custom reducers registered under a stable name (see :func:`register`), and the reverse.
_REGISTRY: dict[str, Callable[..., Any]] = {}
_NAMES: dict[Callable[..., Any], str] = {}


def register(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Register ``fn`` under ``name``: checkpoints record the name, restore finds ``fn`` by it.

    Register at import time, in every process that reads the runs (the one that runs the graph
    and, say, a CLI or a web server). A name is taken once: registering a different function
    under a taken name raises ValueError (the same function again is fine), and the built-in
    names and ``custom:...`` are reserved. Returns ``fn``.
    """
    if not isinstance(name, str) or not name or name.startswith("custom:"):
        raise ValueError(
            f"reducer name must be a non-empty str not starting with 'custom:': {name!r}"
        )
    if name in _BUILTIN_BY_NAME:
        raise ValueError(f"reducer name {name!r} is a built-in reducer's name")
    if not callable(fn):
        raise TypeError(f"reducer {name!r} is not callable (got {type(fn).__name__})")
    if fn in BUILTIN_NAMES:
        raise ValueError(f"{BUILTIN_NAMES[fn]!r} is a built-in reducer: it needs no name")
    known = _REGISTRY.get(name)
    if known is not None and known is not fn:
        raise ValueError(f"reducer name {name!r} is already registered for {known!r}")
    other = _NAMES.get(fn)
    if other is not None and other != name:
        raise ValueError(f"reducer {fn!r} is already registered as {other!r}")
    _REGISTRY[name] = fn
    _NAMES[fn] = name
    return fn


def named(name: str) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
    """Decorator form of :func:`register`: ``@gx.reducers.named("messages-v1")``."""

    def deco(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return register(name, fn)

    return deco


def registered(name: str) -> Callable[..., Any] | None:
    """The reducer registered (or built in) under ``name``, or None."""
    return _BUILTIN_BY_NAME.get(name) or _REGISTRY.get(name)


def name_of(fn: Callable[..., Any], describe: Callable[[Callable[..., Any]], str]) -> str:
    """What a checkpoint records for ``fn``: a built-in's or a registered name, else
    ``custom:<module.qualname>`` (restorable only with the graph at hand)."""
    return BUILTIN_NAMES.get(fn) or _NAMES.get(fn) or f"custom:{describe(fn)}"


_BUILTIN_BY_NAME: dict[str, Callable[..., Any]] = {n: f for f, n in BUILTIN_NAMES.items()}
