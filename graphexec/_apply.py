"""The delta applier: a node's (or an Edit's, or a fork update's) changes, checked against the
state's types, then applied in order through the reducers. Running, barrier resolution and
fork apply deltas through :func:`apply_changes`; restore replays recorded deltas through
:func:`replay_delta`, with the reducers the checkpoint recorded (no graph needed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._state import StateSpec
from .exceptions import GraphError, StateError

__all__ = ("TornUpdate", "apply_changes", "replay_delta")


class TornUpdate(Exception):
    """Internal marker: applying raised after the state was touched (some deltas applied, or a
    reducer that updates in place failed midway). Carries the GraphError to report."""

    def __init__(self, error: GraphError) -> None:
        super().__init__(str(error))
        self.error = error


def apply_changes(
    spec: StateSpec,
    state: dict[str, Any],
    changes: list[tuple[str, Any]],
    *,
    node: str | None,
    writer: str | None = None,
) -> list[tuple[str, Any]]:
    """Check every change, then apply them in order; returns the checked changes.

    ``writer`` names who wrote the changes in errors (default: the node). A check failure
    leaves ``state`` untouched and raises StateError; a failure while applying raises
    TornUpdate (the state may be half updated and must not be checkpointed).
    """
    try:
        changes = spec.check_all(changes, node)
    except StateError as exc:
        if writer is not None:
            raise _renamed(exc, node, writer) from exc
        raise
    try:
        for k, v in changes:
            spec.apply(state, k, v, node=node)
    except GraphError as exc:
        if writer is not None:
            exc = _renamed(exc, node, writer)
        raise TornUpdate(exc) from exc
    return changes


def replay_delta(
    state: dict[str, Any],
    key: str,
    value: Any,
    reducer: Callable[[Any, Any], Any] | None,
    *,
    overwrite: bool = False,
) -> None:
    """Apply one recorded delta the way the run applied it: the value replaces the key's value
    without a reducer or when it was a ``gx.Overwrite``; otherwise it goes through ``reducer``.
    Exceptions pass through (restore names the record)."""
    if overwrite or reducer is None:
        state[key] = value
    else:
        state[key] = reducer(state.get(key), value)


def _renamed(exc: GraphError, node: str | None, writer: str) -> GraphError:
    """The same error, naming ``writer`` where the message said "node <node>"."""
    exc.message = exc.message.replace(f"node {node!r}", writer)
    exc.args = (exc.message,)
    return exc
