"""The SQLite connection a SQLiteStore runs its transactions on, and the two ways it runs them.

One ``sqlite3`` connection per store, opened in a worker thread (creating the file with its
permissions, switching it to WAL, applying migrations). Each store operation is one Python
function that runs a whole transaction; :meth:`Database.run` runs it one of two ways, chosen
when the store opens:

- **portable**: in a worker thread, through ``anyio.to_thread.run_sync`` with a
  ``CapacityLimiter(1)`` (so one function at a time, in call order); works on every anyio
  backend. A cancelled caller waits for the function to finish: a transaction always ends in
  COMMIT or ROLLBACK, never half way.
- **fast**: on the event loop's thread, when the function can start at once: the connection is
  free and SQLite's write lock is not held by another connection (the busy timeout is 0 for these
  calls, so a locked file fails in microseconds instead of waiting). Anything that would wait
  goes to the worker thread as in the portable path: a locked file (the call is retried there
  with the busy timeout), a connection already busy on the thread, WAL checkpoints (SQLite's
  automatic checkpoint is off on a fast connection; :meth:`run` folds the WAL back on the thread
  once about a thousand pages were written), and the first write after opening or after such
  a checkpoint (it starts the WAL afresh, and SQLite syncs a new WAL's header even with
  ``synchronous=NORMAL``). Every other WAL commit with ``synchronous=NORMAL`` writes to the page
  cache without an fsync, so it costs about as much as encoding the checkpoint; the hop to a
  thread and back costs more than the commit itself (see benches/README.md). One case stays on
  the loop: a write right after another process's checkpoint emptied the WAL pays that header
  sync there (once per WAL cycle of that process). The fast path yields to the loop's other
  tasks at least once a millisecond, as waiting for a thread would.

The rule (``SQLiteStore(commit_path="auto")``): fast with ``synchronous="NORMAL"``, portable with
``"FULL"`` (there every commit waits for an fsync, which must not hold the loop); either can be
forced. Both are the same SQL on the same connection, so the store contract suite runs on both.

No part of this uses aiosqlite: its API is asyncio-only and costs a hop per statement.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import anyio
import anyio.lowlevel

__all__ = ("Busy", "CommitPath", "Database", "create_file", "is_busy", "prepare", "retry_busy")

T = TypeVar("T")

CommitPath = Literal["auto", "fast", "portable"]

_SQLITE_BUSY = 5
_WAL_PAGES = 1000
"""Pages written before the fast path folds the WAL back (SQLite's own automatic default)."""
_PAGE = 4096
_YIELD_EVERY = 0.001
"""Seconds of fast-path calls after which the next one yields to the event loop first."""


class Busy(sqlite3.OperationalError):
    """Raised by the store itself for a state another connection is about to change."""


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY ("database is locked") and its extended codes, and for Busy."""
    if isinstance(exc, Busy):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_BUSY
    return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)


def create_file(path: str, file_mode: int | None) -> None:
    """Create the database file with ``file_mode`` if it does not exist yet.

    SQLite gives the -wal and -shm files the permissions of the database file, so creating the
    database file first (empty: a valid empty database) covers all three. ``fchmod`` sets the
    mode exactly, whatever the process umask; an existing file is left as it is.
    """
    if file_mode is None or path == ":memory:" or path == "":  # no file: nothing to create
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, file_mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, file_mode)
    finally:
        os.close(fd)


class Database:
    """A connection, the lock that says who uses it now, and the two ways to run a function."""

    def __init__(self, conn: sqlite3.Connection, *, fast: bool, busy_ms: int) -> None:
        """Wrap a connection :func:`prepare` set up (created in the event loop's thread)."""
        self.conn = conn
        self.fast = fast
        self._busy_ms = busy_ms
        # Held while a function runs on the connection, by the loop's thread (fast path, never
        # across an await) or by a worker thread; the fast path only ever tries it.
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._wal_bytes = 0
        self._last_yield = 0.0
        self._fresh_wal = True
        """The next write may start a new WAL (whose header SQLite syncs): run it on the thread."""

    async def run(self, fn: Callable[[sqlite3.Connection], T], writes: int = 0) -> T:
        """Run ``fn(connection)`` (one whole transaction); ``writes``: bytes it may write (0: it
        only reads)."""
        if self.fast:
            self._wal_bytes += writes
            # Yield to the loop's other tasks at least every millisecond, as a thread hop would:
            # a run saving every step must not keep them waiting. Not at every call: one loop
            # iteration costs a third of an inline commit.
            if time.monotonic() - self._last_yield > _YIELD_EVERY:
                await anyio.lowlevel.checkpoint()
                self._last_yield = time.monotonic()
            stays = not writes or (not self._fresh_wal and self._wal_bytes < _WAL_PAGES * _PAGE)
            if stays and self._lock.acquire(blocking=False):
                try:
                    return fn(self.conn)
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                    # Locked by another connection: nothing was written (the transaction
                    # rolled back); run it again on the thread, where it may wait.
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                finally:
                    self._lock.release()
        return await anyio.to_thread.run_sync(self._on_thread, fn, writes, limiter=self._limiter)

    def _on_thread(self, fn: Callable[[sqlite3.Connection], T], writes: int) -> T:
        with self._lock:  # waits at most for one fast call on the loop's thread
            if not self.fast:
                return fn(self.conn)
            self.conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            try:
                result = fn(self.conn)
                if writes:
                    self._fresh_wal = False
                if self._wal_bytes >= _WAL_PAGES * _PAGE:
                    self._wal_bytes = 0
                    # PASSIVE: copies what no reader still needs, never waits for readers.
                    self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self._fresh_wal = True
                return result
            finally:
                self.conn.execute("PRAGMA busy_timeout = 0")

    async def close(self) -> None:
        """Fold the WAL back into the file (if no other connection still reads it) and close."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        with self._lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass  # another process still reads: its last connection will fold the WAL
            finally:
                self.conn.close()


def prepare(conn: sqlite3.Connection, *, fast: bool) -> None:
    """Connection settings of the fast path (on the opening thread, before :class:`Database`)."""
    if fast:
        # A fast connection's own calls fail at once on a locked file (and go to the thread);
        # the WAL is folded back on the thread, not inside a commit on the loop.
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_autocheckpoint = 0")


def retry_busy(fn: Callable[[], T], timeout: float) -> T:
    """Call ``fn`` (on a worker thread) until it does not fail with SQLITE_BUSY, for ``timeout``.

    For opening a file: switching a new file to WAL needs an exclusive lock and SQLite does not
    call the busy handler for it, so two processes creating one file at once would otherwise see
    "database is locked" at once, whatever the busy timeout. ``fn`` must be safe to repeat.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        # Randomised, growing pauses: two openers that collided do not collide again in step.
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.05)
