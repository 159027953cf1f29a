"""The LISTEN side of PostgresStore's wake-up hints: one connection per store object.

Postgres carries hints between processes with NOTIFY on the channel ``gx_<schema>``, the
payload being the topic (``_hints.py``). A store object opens one connection of its own for
LISTEN on its first ``wait_for``: not a pooled one (a pooled connection serves other work
between transactions), and not through PgBouncer in transaction mode, where a LISTEN does not
even stay on one server connection (``listen_dsn=`` names a direct or session-mode address).

The listener has no task of its own (graphexec starts no detached tasks): whichever waiter
comes first reads the connection while it waits and hands each notification to the store's
in-process :class:`~graphexec.checkpoint._hints.Hints`, which wakes every waiter of that topic;
when that waiter leaves, the next one reads. A lost connection is closed and opened again by
a later waiter after a backoff (0.5 s, doubling up to 30 s); meanwhile waiters time out and
poll, as hints may always be lost.

After each open the listener notifies itself through the pool (a probe). Until the probe comes
back it does not count as carrying hints (:attr:`Listener.verified`); if it never comes back
(the LISTEN went through a transaction-mode pooler), the listener says so once in the log and
stays closed: the store's waiters poll as they would without hints.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import psycopg

from .._log import get_logger
from ._hints import Hints

__all__ = ("Listener", "channel")

_BACKOFF_MIN = 0.5
_BACKOFF_MAX = 30.0
PROBE_WAIT = 5.0
"""Seconds after an open within which the probe must come back, else the LISTEN is deaf."""


def channel(schema: str) -> str:
    """The NOTIFY channel of a store's schema (Postgres cuts identifiers to 63 bytes)."""
    return f"gx_{schema}"[:63]


class Listener:
    """A store object's LISTEN connection, read by its waiters in turn."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        hints: Hints,
        *,
        where: str,
        connect_timeout: float,
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        self.dsn = dsn
        self.channel = channel(schema)
        self.hints = hints
        self._where = where
        self._connect_timeout = connect_timeout
        self._send = send
        """Sends a NOTIFY on the channel through the store's pool (for the probe)."""
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._open_lock = anyio.Lock()
        self._read_lock = anyio.Lock()
        self._reading: anyio.CancelScope | None = None
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN
        self._probe = ""
        self._probe_sent = 0.0
        self._down_logged = False
        self.verified = False
        """The probe sent after the last open came back: notifications reach this listener."""
        self.deaf = False
        """A probe never came back: this listener stays closed (until the store's aclose)."""

    async def ready(self) -> bool:
        """Listening now (opened on first use, or again once its backoff has passed); False
        while the connection is down or deaf."""
        conn = self._conn
        if conn is not None and not conn.closed:
            if not self.verified and time.monotonic() - self._probe_sent > PROBE_WAIT:
                if self._reading is None:
                    await self._drain(conn)  # what came while no one was reading
                if not self.verified:
                    await self._deafen()
                    return False
            return self._conn is not None
        if self.deaf or time.monotonic() < self._retry_at:
            return False
        async with self._open_lock:
            if self._conn is None or self._conn.closed:
                await self._open()
        return self._conn is not None

    async def _open(self) -> None:
        self._conn = None
        self.verified = False
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=max(1, round(self._connect_timeout)),
            )
        except (psycopg.Error, OSError) as exc:
            self._down(exc)
            return
        try:
            await conn.execute(f"LISTEN {self.channel}")
            self._probe = f"probe:{uuid.uuid4().hex}"
            self._probe_sent = time.monotonic()
            await self._send(self._probe)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the listener down, retried later
            with anyio.CancelScope(shield=True):
                await conn.close()
            self._down(exc)
            return
        except BaseException:
            # The wait was cancelled mid-open (a worker stops waiting when a slot frees):
            # close the connection; the next wait opens another.
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        self._conn = conn

    def _down(self, exc: BaseException) -> None:
        """The connection could not be opened or was lost: try again after the backoff."""
        self._retry_at = time.monotonic() + self._backoff
        if not self._down_logged:
            self._down_logged = True
            get_logger().warning(
                "Postgres LISTEN connection down: wake-up hints from other processes are "
                "lost until it is back (waiters poll meanwhile)",
                where=self._where,
                error=" ".join(str(exc).split()),
                retry_in=self._backoff,
            )
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)

    async def _deafen(self) -> None:
        conn, self._conn = self._conn, None
        self.deaf = True
        get_logger().warning(
            "Postgres LISTEN gets no notifications (its own probe never came back: is the "
            "address a PgBouncer in transaction mode? pass listen_dsn= a direct or session-"
            "mode address); wake-up hints from other processes are off, waiters poll",
            where=self._where,
        )
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def pump(self) -> None:
        """Read notifications into the hints until cancelled; one reader at a time (the others
        wait their turn here). A lost connection is closed, to be opened again later."""
        async with self._read_lock:
            conn = self._conn
            if conn is None or conn.closed:
                return
            with anyio.CancelScope() as scope:
                self._reading = scope
                try:
                    await self._read(conn, None)
                finally:
                    self._reading = None

    async def _drain(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Read the notifications already there (no waiter was reading when they came)."""
        async with self._read_lock:
            if self._conn is conn:
                await self._read(conn, 0.05)

    async def _read(self, conn: psycopg.AsyncConnection[Any], until: float | None) -> None:
        """Hand notifications to the hints (for ``until`` seconds; None: until cancelled)."""
        try:
            async for note in conn.notifies(timeout=until):
                if note.payload == self._probe:
                    self.verified = True
                    self._backoff = _BACKOFF_MIN
                    self._down_logged = False
                else:
                    self.hints.notify(note.payload)
        except psycopg.Error as exc:
            if self._conn is conn:
                self._conn = None
                with anyio.CancelScope(shield=True):
                    await conn.close()
                self._down(exc)

    async def aclose(self) -> None:
        """Close the connection (the next ``ready`` opens a new one)."""
        conn, self._conn = self._conn, None
        if self._reading is not None:
            self._reading.cancel()
        self.deaf = False
        self.verified = False
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN
        if conn is not None:
            with anyio.CancelScope(shield=True):
                async with self._read_lock:
                    await conn.close()
