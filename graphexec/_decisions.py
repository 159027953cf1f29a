"""Barrier decisions: what a human (or a timeout) answers to a waiting barrier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import msgspec

from ._directives import Overwrite

__all__ = ("Approve", "Decision", "Edit", "Reject", "Skip")


class Approve(msgspec.Struct, frozen=True, tag="approve"):
    """Let the run go on."""


class Reject(msgspec.Struct, frozen=True, tag="reject"):
    """Refuse; the reason is recorded in the state."""

    reason: str | None = None


class Edit(msgspec.Struct, frozen=True, tag="edit", omit_defaults=True):
    """Approve with changes: ``update`` is applied through the reducers first (a value wrapped
    in ``gx.Overwrite`` replaces the key's value instead)."""

    update: Mapping[str, Any] = msgspec.field(default_factory=dict)
    overwrite: tuple[str, ...] = ()
    """The keys of ``update`` whose value is a ``gx.Overwrite``: filled in on construction,
    and read back on decoding (a stored Edit holds the wrapper as ``{"value": v}``)."""

    def __post_init__(self) -> None:
        keys = tuple(k for k, v in self.update.items() if type(v) is Overwrite)
        if keys:
            msgspec.structs.force_setattr(self, "overwrite", keys)
        elif self.overwrite:  # decoded from a store or a checkpoint: wrap the values again
            wanted = set(self.overwrite)
            update = {
                k: Overwrite(v["value"]) if k in wanted and isinstance(v, dict) else v
                for k, v in self.update.items()
            }
            msgspec.structs.force_setattr(self, "update", update)


class Skip(msgspec.Struct, frozen=True, tag="skip"):
    """Neither approve nor reject (the ``default="skip"`` action); routing uses normal edges."""


Decision: TypeAlias = Approve | Reject | Edit | Skip
"""Any decision; a tagged union, so it round-trips through JSON and msgpack."""

DefaultAction: TypeAlias = Literal["approve", "reject", "skip"]


def default_decision(action: DefaultAction) -> Decision:
    """The decision a timed-out barrier applies."""
    if action == "approve":
        return Approve()
    if action == "reject":
        return Reject("timed out")
    return Skip()


def decision_name(decision: Decision) -> str:
    """What is recorded under ``decision`` in the state: an Edit counts as an approval."""
    if isinstance(decision, Edit):
        return "approve"
    return type(decision).__struct_config__.tag  # type: ignore[return-value]
