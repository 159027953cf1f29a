"""Lease rules every store shares: who holds a trace, whether that holder is gone, and the
check every write makes (the fencing token).

A lease names its owner: a random id per driver (``owner``), plus the host, process id and
process start time of the process it runs in. Each grant to a new owner gets the next fencing
token (``token``). A write carries the writer's owner id and token, and is refused with
:class:`LeaseLost` unless the lease row still holds exactly those: a driver whose lease was
taken over (it was paused, partitioned, or an operator used ``take_over=True``) writes nothing.

A holder is *gone* when it runs on this host and its process is not alive (no such pid, or a
pid reused by a process with another start time): such a lease never blocks anyone. Elsewhere
a lease blocks until it expires (``lease_ttl`` after the last renewal).
"""

from __future__ import annotations

import datetime
import os
import socket
from functools import cache

import msgspec

from ..exceptions import LeaseLost, RunLocked
from ._record import Lease, LeaseInfo

__all__ = (
    "LeaseRow",
    "check_append",
    "check_write",
    "describe",
    "grant",
    "process_gone",
    "this_process",
)


class LeaseRow(msgspec.Struct, kw_only=True):
    """A lease as a store keeps it (``owner == ""``: released; the token is kept)."""

    owner: str
    token: int
    expires_at: float
    host: str = ""
    pid: int = 0
    started: str = ""

    def held(self, t: float) -> bool:
        """True while an owner holds it and it has not expired."""
        return bool(self.owner) and self.expires_at > t

    def live(self, t: float) -> bool:
        """True while a live driver holds it: held, unexpired, and not an owner on this host
        whose process is gone (a parked or released lease has no owner)."""
        return self.held(t) and not process_gone(self.host, self.pid, self.started)

    def info(self) -> LeaseInfo:
        return LeaseInfo(
            owner=self.owner,
            host=self.host,
            pid=self.pid,
            started=self.started,
            expires_at=self.expires_at,
            token=self.token,
        )


@cache
def this_process() -> tuple[str, int, str]:
    """``(host, pid, start time)`` of this process (the start time is read from /proc where
    it exists, so a reused pid is told apart)."""
    pid = os.getpid()
    return socket.gethostname(), pid, _start_time(pid) or ""


def _start_time(pid: int) -> str | None:
    """The process's start time (boot id and clock ticks since boot), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return "gone"
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    ticks = fields[19].decode() if len(fields) > 19 else "?"
    return f"{_boot_id()}:{ticks}"


@cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_gone(host: str, pid: int, started: str) -> bool:
    """True if the lease holder ran on this host and its process is no longer there."""
    my_host, my_pid, _ = this_process()
    if not host or host != my_host or pid <= 0:
        return False  # another machine (or an owner that did not say): wait for the expiry
    if pid == my_pid:
        return False  # this process: alive (another run in it holds the lease)
    if os.path.isdir("/proc/self"):
        now_started = _start_time(pid)
        if now_started == "gone":
            return True
        return bool(started) and now_started is not None and now_started != started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def describe(row: LeaseRow) -> str:
    """Who holds a lease, for messages."""
    where = f"pid {row.pid} on {row.host}" if row.host else "an owner"
    return f"{where} (instance {row.owner[:12]}, fencing token {row.token})"


def _until(row: LeaseRow, t: float) -> str:
    at = datetime.datetime.fromtimestamp(row.expires_at, tz=datetime.UTC)
    return f"until {at:%Y-%m-%d %H:%M:%S} UTC (expires in {row.expires_at - t:.1f}s unless renewed)"


def grant(
    row: LeaseRow | None,
    lease: Lease,
    t: float,
    *,
    trace_id: str,
    take_over: bool = False,
    last_seq: int | None = None,
    expect_seq: int | None = None,
) -> LeaseRow:
    """The lease row to write for ``lease`` taking or renewing the trace; raises RunLocked
    while another live owner holds it, and LeaseLost when ``expect_seq`` (the last seq this
    driver committed) is not the trace's last seq (someone else wrote since)."""
    if row is not None and row.owner == lease.owner and row.token == lease.token:
        token = row.token  # a renewal
    else:
        if row is not None and row.owner != lease.owner and not take_over and row.live(t):
            raise RunLocked(
                f"run {trace_id!r} is driven by {describe(row)} {_until(row, t)}; if you know "
                "that owner is gone, resume_from(..., take_over=True) takes the run over",
                trace_id=trace_id,
                expires_at=row.expires_at,
                owner=describe(row),
            )
        if expect_seq is not None and last_seq != expect_seq:
            raise LeaseLost(
                f"run {trace_id!r} was driven elsewhere while this driver did not hold its "
                f"lease (checkpoint seq {last_seq} written after this driver's seq "
                f"{expect_seq}); this driver writes nothing more",
                trace_id=trace_id,
                token=lease.token,
            )
        token = (row.token if row is not None else 0) + 1
    return LeaseRow(
        owner=lease.owner,
        token=token,
        expires_at=t + lease.ttl,
        host=lease.host,
        pid=lease.pid,
        started=lease.started,
    )


def check_write(row: LeaseRow | None, lease: Lease, t: float, *, trace_id: str) -> bool:
    """The check every write by a lease holder makes (saves, releases, event appends): raises
    LeaseLost unless the row still holds this owner and token. Returns True when the lease
    should be renewed (less than half its ttl left).

    A ``Lease`` with token 0 comes from a writer that never acquired (a tool, a test): it
    takes the lease like ``acquire_lease`` would (use :func:`grant`)."""
    if row is not None and row.owner == lease.owner and row.token == lease.token:
        return row.expires_at - t <= lease.ttl / 2
    holder = describe(row) if row is not None and row.owner else "no one (released)"
    raise LeaseLost(
        f"run {trace_id!r}: this driver's lease (fencing token {lease.token}) was taken over; "
        f"it is now held by {holder}. This driver writes nothing more: the run goes on where "
        "its new owner drives it",
        trace_id=trace_id,
        token=lease.token,
    )


def check_append(row: LeaseRow | None, lease: Lease, *, trace_id: str) -> None:
    """The check an event append makes: the row must still carry the writer's fencing token,
    held by the writer or released by it (parked at a barrier, or after its final save) and
    taken by no one since (every new grant raises the token). Raises LeaseLost otherwise: a
    driver whose lease was taken over records no events."""
    if (
        row is not None
        and lease.token > 0
        and row.token == lease.token
        and row.owner in (lease.owner, "")
    ):
        return
    holder = describe(row) if row is not None and row.owner else "no one (released)"
    raise LeaseLost(
        f"run {trace_id!r}: events not recorded: this driver's lease (fencing token "
        f"{lease.token}) was taken over; the lease is now held by {holder} (token "
        f"{row.token if row is not None else 0})",
        trace_id=trace_id,
        token=lease.token,
    )
