"""Sending events to the consumer with backpressure, from the run, branches and worker threads."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._events import GraphEvent

if TYPE_CHECKING:
    from ._eventlog import EventLog

__all__ = ("Emitter",)

_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError)


class Emitter:
    """Puts events on the run's bounded stream; a full stream makes ``send`` wait.

    ``send_soon`` never blocks: when the stream is full the event joins a backlog that the next
    ``send`` (or ``flush``) delivers first, so order is kept. Once the consumer is gone, events
    are dropped and ``gone`` is set. Every event first goes through the run's event log (its
    id, its record, live tails), consumer or not: a run started without a consumer has an
    Emitter with no stream.
    """

    __slots__ = ("_backlog", "_stream", "_thread", "gone", "log")

    def __init__(
        self, stream: MemoryObjectSendStream[GraphEvent] | None, log: EventLog | None = None
    ) -> None:
        self._stream: Any = stream
        self._backlog: deque[GraphEvent] = deque()
        self._thread = threading.get_ident()
        self.gone = stream is None
        self.log = log

    async def send(self, event: GraphEvent, *, durable: bool = False) -> None:
        """Deliver ``event``, waiting while the consumer's buffer is full. ``durable``: write
        it (and the events before it) to the event log before delivering it."""
        if self.log is not None:
            self.log.stamp(event)
            if durable:
                await self.log.flush()
        if self.gone:
            return
        if self._backlog:
            self._backlog.append(event)
            await self.flush()
            return
        try:
            self._stream.send_nowait(event)
        except anyio.WouldBlock:
            try:
                await self._stream.send(event)
            except _GONE:
                self.gone = True
        except _GONE:
            self.gone = True

    def send_soon(self, event: GraphEvent) -> None:
        """Deliver without blocking (backlogged if full); safe from a worker thread too."""
        if self.gone and (self.log is None or self.log.closed):
            return
        if threading.get_ident() != self._thread:
            try:
                anyio.from_thread.run(self.send, event)
            except RuntimeError:
                # A worker thread abandoned by a cancel can outlive the run and its event
                # loop: what it emits then has no one to go to.
                self.gone = True
            return
        if self.log is not None:
            self.log.stamp(event)
        if self.gone:
            return
        if self._backlog:
            self._backlog.append(event)
            return
        try:
            self._stream.send_nowait(event)
        except anyio.WouldBlock:
            self._backlog.append(event)
        except _GONE:
            self.gone = True

    async def flush(self) -> None:
        """Deliver the backlog, in order."""
        while self._backlog and not self.gone:
            event = self._backlog.popleft()
            try:
                await self._stream.send(event)
            except _GONE:
                self.gone = True
                self._backlog.clear()

    def close(self) -> None:
        """End the stream: the consumer's ``async for`` finishes after the buffered events."""
        if self._stream is not None:
            self._stream.close()


class Delivery:
    """What ``ctx.emit`` returns: awaiting it waits until the event is in the consumer's buffer."""

    __slots__ = ("_emitter",)

    def __init__(self, emitter: Emitter | None) -> None:
        self._emitter = emitter

    def __await__(self) -> Generator[Any, None, None]:
        if self._emitter is not None and threading.get_ident() == self._emitter._thread:
            return self._emitter.flush().__await__()
        return _done().__await__()


async def _done() -> None:
    return None
