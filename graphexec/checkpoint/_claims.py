"""Claiming runs that need a driver: the rule every store shares (``claim_runs``).

A run *needs a driver* when no live owner holds its lease (no lease row, released, expired, or
held by a process of this host that is gone: ``_leases.LeaseRow.live``) and it is queued,
interrupted or running, or it is waiting and either its ``ready_at`` has passed (a decision
arrived, or its barrier's deadline came) or its lease still names an owner (a driver that
claimed it died before parking it again). Claimable runs go oldest ready first: by
``ready_at``, or ``updated_at`` where the writer set none, then by first insertion.

Stores find candidates their own way (a scan in memory, SQL elsewhere) and decide with
:func:`needs_driver` where the process table matters; the lease granted follows
``_leases.grant`` (a new owner gets ``token + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ._leases import LeaseRow, grant, process_gone
from ._record import Claim, Lease, RunInfo

__all__ = (
    "CLAIMABLE_STATUSES",
    "Liveness",
    "check_claim_args",
    "claim",
    "claimable_now",
    "needs_driver",
    "ready_since",
)

CLAIMABLE_STATUSES = ("queued", "interrupted", "running", "waiting")
"""Statuses a run may be claimed in; finished, failed and cancelled runs never are."""


def check_claim_args(graph_names: Sequence[str], leases: Sequence[Lease]) -> None:
    """Refuse arguments no claim can honour, naming what is wrong (before any I/O)."""
    if isinstance(graph_names, str | bytes):
        raise TypeError(
            f"claim_runs: graph_names must be a sequence of graph names, not the string "
            f"{graph_names!r} (write [{graph_names!r}])"
        )
    for name in graph_names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"claim_runs: graph names must be non-empty strings, not {name!r}")
    owners: set[str] = set()
    for lease in leases:
        if not isinstance(lease, Lease):
            raise TypeError(f"claim_runs: leases must be Lease values, not {lease!r:.80}")
        if not lease.owner:
            raise ValueError("claim_runs: every lease needs an owner id")
        if not lease.ttl > 0:
            raise ValueError(f"claim_runs: lease ttl must be positive, not {lease.ttl!r}")
        if lease.owner in owners:
            raise ValueError(
                f"claim_runs: owner {lease.owner!r} appears twice; each run claimed needs "
                "an owner id of its own"
            )
        owners.add(lease.owner)


class Liveness:
    """``LeaseRow.live`` for one claim: each holder process of this host is looked up once
    (a worker on this host holds many leases; ``/proc`` is read once for all of them)."""

    def __init__(self) -> None:
        self._gone: dict[tuple[str, int, str], bool] = {}

    def live(self, lease: LeaseRow, t: float) -> bool:
        """True while a live driver holds ``lease`` at time ``t``."""
        return lease.held(t) and not self.gone(lease)

    def gone(self, lease: LeaseRow) -> bool:
        """True if the holder ran on this host and its process is no longer there."""
        key = (lease.host, lease.pid, lease.started)
        gone = self._gone.get(key)
        if gone is None:
            gone = self._gone[key] = process_gone(*key)
        return gone


def needs_driver(
    status: str, ready_at: float | None, lease: LeaseRow | None, t: float, alive: Liveness
) -> bool:
    """The shared rule: True when the run needs a driver at time ``t`` (see the module)."""
    if lease is not None and alive.live(lease, t):
        return False
    if status in ("queued", "interrupted", "running"):
        return True
    if status == "waiting":
        return (ready_at is not None and ready_at <= t) or (lease is not None and bool(lease.owner))
    return False


def claimable_now(run: RunInfo, t: float) -> bool:
    """True when a save of ``run`` makes it claimable (the moment to send the "work" hint):
    queued or interrupted, or ``ready_at`` already passed. The saves of a run being driven
    (``ready_at`` None) never are."""
    return run.status in ("queued", "interrupted") or (
        run.ready_at is not None and run.ready_at <= t
    )


def ready_since(run: RunInfo) -> float:
    """The claim order's key: when the run became ready (``ready_at``, else ``updated_at``)."""
    return run.updated_at if run.ready_at is None else run.ready_at


def claim(run: RunInfo, row: LeaseRow | None, lease: Lease, t: float) -> tuple[Claim, LeaseRow]:
    """Grant ``lease`` (its token ignored) on a run that needs a driver: the Claim handed
    back (the runs row with its new holder and ``ready_at`` cleared) and the lease row to
    write."""
    asked = msgspec.structs.replace(lease, token=-1)  # never a renewal: always a new owner
    new = grant(row, asked, t, trace_id=run.trace_id, take_over=True)
    granted = msgspec.structs.replace(lease, token=new.token)
    claimed = msgspec.structs.replace(run, lease=new.info(), ready_at=None)
    return Claim(trace_id=run.trace_id, lease=granted, run=claimed), new
