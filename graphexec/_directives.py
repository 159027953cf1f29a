"""What a node may return besides None or a mapping: state deltas and routing directives.

A node's updates are a mapping ``{key: value}`` (one write per key) or a sequence of
:class:`StateDelta` (several writes to one key, applied in order). A value wrapped in
:class:`Overwrite` replaces the key's value, bypassing its reducer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import msgspec

__all__ = ("End", "Fallback", "Goto", "Overwrite", "StateDelta", "Updates")


class Overwrite(msgspec.Struct, frozen=True):
    """An update value that replaces the key's value, bypassing the key's reducer.

    ``{"messages": gx.Overwrite([])}`` empties a list kept with ``append``. Recorded as a
    :class:`StateDelta` with ``overwrite=True``, so restoring replays it the same way.
    """

    value: Any


class StateDelta(msgspec.Struct, frozen=True, array_like=True):
    """One change to one key, applied through the key's reducer (or replacing the value)."""

    key: str
    """The state key."""
    value: Any
    """The value handed to the reducer (for ``append``: the item or items to add)."""
    overwrite: bool = False
    """The value replaces the key's value, bypassing its reducer (``gx.Overwrite``). Appended
    with a default: records written before it existed still decode."""

    def __post_init__(self) -> None:
        # StateDelta(key, Overwrite(v)) is kept as StateDelta(key, v, overwrite=True), so the
        # record encodes the flag and not a wrapper the decoder would read back as a dict.
        value = self.value
        if type(value) is Overwrite:
            msgspec.structs.force_setattr(self, "value", value.value)
            msgspec.structs.force_setattr(self, "overwrite", True)


Updates: TypeAlias = Mapping[str, Any] | Sequence[StateDelta]
"""A node's state updates: a mapping, or StateDeltas applied in order (a key may repeat)."""


class Goto(msgspec.Struct, frozen=True):
    """Continue at ``target`` (which must be a declared edge out of the node)."""

    target: str
    update: Updates | None = None


class End(msgspec.Struct, frozen=True):
    """Finish the run after applying ``update``."""

    update: Updates | None = None


class Fallback(msgspec.Struct, frozen=True):
    """Follow the node's fallback edge and emit an ``ObservedError`` carrying ``reason``."""

    reason: str = ""
    update: Updates | None = None
