"""Barrier decisions: what a human (or a timeout) answers to a waiting barrier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import msgspec

__all__ = ("Approve", "Decision", "Edit", "Reject", "Skip")


class Approve(msgspec.Struct, frozen=True, tag="approve"):
    """Let the run go on."""


class Reject(msgspec.Struct, frozen=True, tag="reject"):
    """Refuse; the reason is recorded in the state."""

    reason: str | None = None


class Edit(msgspec.Struct, frozen=True, tag="edit"):
    """Approve with changes: ``update`` is applied through the reducers first."""

    update: Mapping[str, Any] = msgspec.field(default_factory=dict)


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
