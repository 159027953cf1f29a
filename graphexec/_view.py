"""What a node sees of the run's state: a read-only view that cannot change it.

The run owns its state dict and updates some values in place (``append`` and ``merge``). A node
that mutated a value it read (``state["log"].append(x)``) would change the run's state without
a delta: ``result.state`` would differ from what the checkpoints replay to. So a view hands out
list, dict and set values as copies (all the way down through lists, dicts and sets; other
objects are shared and must not be mutated: use frozen Structs or tuples for records in lists).
Scalars (and str, bytes, tuples) are handed out as they are, so reading a counter costs one
dict lookup and one type check.

The view also records which keys were read (``keys_read``): every node execution records them
in its step record, and a re-run reuses an execution whose read keys still hold the same values
(``graphexec/_rerun/``). Recording is one set insertion per read; walking the keys or asking
the length counts as reading every key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ("StateView", "fresh")

_CONTAINERS = (list, dict, set)


def fresh(value: Any) -> Any:
    """``value``, with every list, dict and set in it copied (other objects shared)."""
    t = type(value)
    if t is list:
        return [fresh(v) if type(v) in _CONTAINERS else v for v in value]
    if t is dict:
        return {k: fresh(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if t is set:
        return set(value)  # set members are hashable, so never lists, dicts or sets
    return value


class StateView(Mapping[str, Any]):
    """A read-only mapping over the run's state; mutable values are handed out as copies."""

    __slots__ = ("_data", "keys_read")

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self.keys_read: set[str] = set()
        """The keys read through this view so far (``[]``, ``get``, ``items``, ``in``)."""

    def __getitem__(self, key: str) -> Any:
        self.keys_read.add(key)  # before the lookup: a key read while missing counts too
        value = self._data[key]
        if type(value) in _CONTAINERS:
            return fresh(value)
        return value

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.keys_read.add(key)  # a node that branches on "key in state" depends on it
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        # A node that walks the keys (``keys()``, ``items()``, ``dict(view)``) depends on which
        # keys exist, and so on every one of them.
        self.keys_read.update(self._data)
        return iter(self._data)

    def __len__(self) -> int:
        self.keys_read.update(self._data)
        return len(self._data)

    # What MappingProxyType (the view before this one) offered besides Mapping: ``copy()`` and
    # ``|`` give a plain dict the node owns.
    def copy(self) -> dict[str, Any]:
        """A dict of the state (copies of list, dict and set values); marks every key read."""
        self.keys_read.update(self._data)
        return {k: fresh(v) for k, v in self._data.items()}

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        out = self.copy()
        out.update(other)
        return out

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        out = dict(other)
        out.update(self.copy())
        return out

    def __repr__(self) -> str:
        return f"StateView({self._data!r})"
