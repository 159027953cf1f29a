"""The event log of one run: ids for its events, their record in the store, and live tails.

Every event a run sends gets its ``event_id`` here, as it is sent (``Emitter`` calls
:meth:`EventLog.stamp`): ``(segment << 32) | n``, where the segment is taken from the store
once per driver (:meth:`CheckpointStore.next_event_segment`) and ``n`` counts the driver's
events. A driver that crashed may have shown ids to a consumer that it never recorded; the next
driver's segment is higher, so those ids are never given to other events.

Recorded events are written in batches: with each checkpoint, in its transaction (the
checkpointer takes the pending batch), and, between checkpoints, by a flusher task every
``flush_interval`` seconds, so another process sees them promptly. One lock orders the writes,
so the store receives batches in id order and a reader polling ``events_after`` never skips a
batch committed late. In-process tails (``ex.events`` on a run this process drives) subscribe
here and get every event straight from the driver.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._eventcodec import Sources, encode_events
from ._events import Custom, GraphEvent
from ._log import get_logger
from .checkpoint._base import CheckpointStore, StoreBase
from .checkpoint._hints import events_topic
from .checkpoint._record import EventBatch, Lease
from .exceptions import LeaseLost

__all__ = ("EventLog",)

_encoder = msgspec.msgpack.Encoder()

_force = msgspec.structs.force_setattr


class EventLog:
    """Ids, recording and live subscribers of one run's events."""

    def __init__(
        self,
        store: CheckpointStore | None,
        trace_id: str,
        *,
        record_custom: bool = True,
        flush_interval: float = 0.05,
    ) -> None:
        self.store = store
        """Where events are recorded; None: ids and live tails only."""
        self.trace_id = trace_id
        self._topic = events_topic(trace_id)
        self.record_custom = record_custom
        self.flush_interval = flush_interval
        self.lock = anyio.Lock(fast_acquire=True)
        """Held while a batch is written (with a checkpoint or alone): batches commit in order."""
        self._base = 0
        self._n = 0
        self._pending: list[GraphEvent] = []
        self._inflight: list[GraphEvent] = []
        self._subs: list[MemoryObjectSendStream[GraphEvent]] = []
        self._closed = False
        self.lease: Callable[[], Lease] | None = None
        """The run's current lease (its checkpointer's keeper sets this): every write is fenced
        by it, so a driver whose lease was taken over records no events."""
        self.lost = False
        """A write found the lease taken over: nothing more is recorded."""
        self.state_seq: int | None = None
        """The seq of the run's committed completion checkpoint, when its state restores
        without the graph: GraphComplete is then recorded without its state (read back from
        that checkpoint)."""

    async def open(self) -> None:
        """Take this driver's id segment from the store (before the first event)."""
        if self.store is not None:
            self._base = await self.store.next_event_segment(self.trace_id) << 32

    @property
    def closed(self) -> bool:
        """The run's driver has ended: nothing more is recorded or sent to tails."""
        return self._closed

    @property
    def last_id(self) -> int:
        """The id of the last event stamped (0: none yet)."""
        return self._base | self._n if self._n else 0

    def stamp(self, event: GraphEvent) -> None:
        """Give ``event`` its id, queue it for the record and hand it to live tails."""
        self._n += 1
        _force(event, "event_id", self._base | self._n)
        if (
            self.store is not None
            and not self.lost
            and (self.record_custom or type(event) is not Custom)
        ):
            self._pending.append(event)
        subs = self._subs
        if subs:
            for s in list(subs):
                try:
                    s.send_nowait(event)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    s.close()  # the tail went away
                    subs.remove(s)

    # -- live tails ----------------------------------------------------------------------------

    def subscribe(self) -> tuple[list[GraphEvent], MemoryObjectReceiveStream[GraphEvent]]:
        """Events recorded but maybe not committed yet, and a stream of every later event.

        Read the store *after* subscribing: what it lacks is in the returned list. The stream
        is unbounded (a slow tail never slows the run) and ends when the run's driver ends.
        """
        send, recv = anyio.create_memory_object_stream[GraphEvent](math.inf)
        if self._closed:
            send.close()
        else:
            self._subs.append(send)
        return [*self._inflight, *self._pending], recv

    # -- writing -------------------------------------------------------------------------------

    def take(self, sources: Sources | None = None) -> EventBatch | None:
        """The pending events as one batch for a write (call with ``lock`` held, then
        :meth:`written`); None when nothing is pending. ``sources``: the step records of the
        checkpoints the batch is committed with (their deltas are not stored again)."""
        if not self._pending:
            return None
        events, self._pending = self._pending, []
        self._inflight = events
        if self.state_seq is not None:
            if sources is None:
                sources = Sources()
            sources.state_seq = self.state_seq
        return self._encode(events, sources)

    def written(self, ok: bool) -> None:
        """The batch of :meth:`take` was committed (``ok``), or not: then it is written later.
        A committed batch wakes this process's tails of the trace that read the store
        (``ex.events`` through another executor or store object on the same store)."""
        if not ok:
            self._pending[:0] = self._inflight
        elif self._inflight and isinstance(self.store, StoreBase):
            self.store.hints.notify(self._topic)
        self._inflight = []

    def _encode(self, events: list[GraphEvent], sources: Sources | None) -> EventBatch | None:
        try:
            data = encode_events(events, sources)
        except (TypeError, ValueError, OverflowError):
            parts: list[GraphEvent] = []
            for event in events:
                try:
                    _encoder.encode(event)
                    parts.append(event)
                except (TypeError, ValueError, OverflowError) as exc:
                    # A Custom payload msgpack cannot hold: live consumers had it; the record
                    # leaves it out rather than fail the run.
                    get_logger(trace_id=self.trace_id).warning(
                        "event not recorded: not msgspec-encodable",
                        event_type=type(event).__name__,
                        event_id=event.event_id,
                        error=str(exc),
                    )
            if not parts:
                return None
            data = encode_events(parts, sources)
        return EventBatch(first_id=events[0].event_id, last_id=events[-1].event_id, data=data)

    async def flush(self) -> None:
        """Write the pending events now (alone, not with a checkpoint); never raises: a failed
        write is retried with the next one."""
        store = self.store
        if store is None or not self._pending or self.lease is None:
            return
        with anyio.CancelScope(shield=True):
            async with self.lock:
                batch = self.take()
                if batch is None:
                    self.written(True)
                    return
                try:
                    await store.append_events(self.trace_id, batch, lease=self.lease())
                except LeaseLost as exc:
                    # Another driver owns the run now: its events are the record.
                    self.written(True)
                    self.drop(exc)
                except Exception as exc:  # noqa: BLE001 - kept pending, written with the next batch
                    self.written(False)
                    get_logger(trace_id=self.trace_id).warning(
                        "events not recorded yet", error=repr(exc)
                    )
                else:
                    self.written(True)

    def drop(self, exc: LeaseLost) -> None:
        """The lease was taken over: drop what is pending and record nothing more."""
        if not self.lost:
            get_logger(trace_id=self.trace_id).warning(
                "events not recorded: the lease was taken over",
                dropped=len(self._pending),
                error=exc.message,
            )
        self.lost = True
        self._pending.clear()

    async def run(self) -> None:
        """The flusher: between checkpoints, write pending events every ``flush_interval``."""
        while True:
            await anyio.sleep(self.flush_interval)
            if self._pending:
                await self.flush()

    async def close(self) -> None:
        """Write what is left and end the live tails (the run's driver has ended)."""
        await self.flush()
        self._closed = True
        for s in self._subs:
            s.close()
        self._subs.clear()
