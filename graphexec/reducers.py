"""Reducers: how a delta for a key is combined with the key's current value.

A reducer is a pure function ``(current, value) -> new``. ``current`` is ``None`` when the key
is not in the state yet. Reducers must be deterministic: restoring a checkpoint replays the
recorded deltas through them.

The built-in ``append`` and ``merge`` may also update the run's own copy in place (the
executor copies the initial value once, so a caller's objects are never mutated); that keeps a
step's cost proportional to the change, not to the size of the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ("add", "append", "merge", "overwrite", "union")


def overwrite(current: Any, value: Any) -> Any:
    """Replace the current value (the default for keys with no reducer)."""
    return value


def append(current: list[Any] | None, value: Any) -> list[Any]:
    """Append to a list; a list or tuple value extends it, any other value is one item."""
    base = list(current) if current is not None else []
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


def union(current: Iterable[Any] | None, value: Any) -> list[Any]:
    """Set union kept as a sorted list (so it encodes and compares deterministically)."""
    items = set(current or ())
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
