"""What a node may return besides None or a mapping: state deltas and routing directives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ("End", "Fallback", "Goto", "StateDelta")


class StateDelta(msgspec.Struct, frozen=True, array_like=True):
    """One change to one key, applied through the key's reducer."""

    key: str
    """The state key."""
    value: Any
    """The value handed to the reducer (for ``append``: the item or items to add)."""


class Goto(msgspec.Struct, frozen=True):
    """Continue at ``target`` (which must be a declared edge out of the node)."""

    target: str
    update: Mapping[str, Any] | None = None


class End(msgspec.Struct, frozen=True):
    """Finish the run after applying ``update``."""

    update: Mapping[str, Any] | None = None


class Fallback(msgspec.Struct, frozen=True):
    """Follow the node's fallback edge and emit an ``ObservedError`` carrying ``reason``."""

    reason: str = ""
    update: Mapping[str, Any] | None = None
