"""The error tree's groups (exceptions.py): usage, run and store errors, each under GraphError."""

from __future__ import annotations

import pytest

import graphexec as gx

GROUPS: dict[type[gx.GraphError], list[type[gx.GraphError]]] = {
    gx.UsageError: [
        gx.InvalidGraph,
        gx.NodeNotFound,
        gx.InvalidDecision,
        gx.GraphChanged,
        gx.RunNotFound,
        gx.RunFinished,
        gx.RunExists,
        gx.StoreRequired,
        gx.InvalidTraceId,
        gx.PlanStale,
    ],
    gx.RunError: [
        gx.MissingEdge,
        gx.Unrouted,
        gx.StepsExceeded,
        gx.NodeExecutionFailed,
        gx.StateError,
        gx.Cancelled,
        gx.NodeTimeout,
        gx.CircuitOpen,
        gx.RetriesExhausted,
    ],
    gx.StoreError: [gx.CheckpointError, gx.RunLocked, gx.LeaseLost],
}


@pytest.mark.parametrize(("group", "members"), list(GROUPS.items()))
def test_each_error_is_in_its_group(
    group: type[gx.GraphError], members: list[type[gx.GraphError]]
) -> None:
    """Every error sits in exactly one group, and every group under GraphError."""
    assert issubclass(group, gx.GraphError)
    for member in members:
        assert issubclass(member, group)
        others = [g for g in GROUPS if g is not group]
        assert not any(issubclass(member, g) for g in others)


def test_the_new_errors_carry_their_context() -> None:
    """RunExists names the status; RunLocked its holder; LeaseLost the stale token."""
    exists = gx.RunExists("t is waiting", trace_id="t", status="waiting")
    locked = gx.RunLocked("held", trace_id="t", expires_at=1.0, owner="pid 1 on h")
    lost = gx.LeaseLost("taken over", trace_id="t", token=3)
    assert (exists.status, locked.owner, locked.expires_at, lost.token) == (
        "waiting",
        "pid 1 on h",
        1.0,
        3,
    )
    assert "trace 't'" in str(lost)
