"""Wake-up hints: "look now" signals that spare a poller its wait.

A hint carries no data and may be lost: whoever waits for one also polls, with the hint only
cutting the wait short. Topics: ``"work"`` (a run needs a driver: queued, interrupted, a waiting
run's decision arrived, a lease handed back) and ``"events:<trace_id>"`` (new events recorded
for a trace). In one process a hint reaches every waiter at once (:class:`Hints`); PostgresStore
also carries them between processes with ``LISTEN/NOTIFY``; SQLite has no such channel, so
other processes find the change at their next poll.
"""

from __future__ import annotations

import anyio

__all__ = ("WORK", "Hints", "events_topic")

WORK = "work"
"""The topic of runs that need a driver (what workers wait for)."""


def events_topic(trace_id: str) -> str:
    """The topic of a trace's new events (what event tails wait for)."""
    return f"events:{trace_id}"


class Hints:
    """An in-process broker of hints by topic: ``notify`` wakes every current waiter."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[anyio.Event]] = {}

    def notify(self, topic: str) -> None:
        """Wake whoever waits on ``topic`` now (no-op when no one does)."""
        for event in self._waiters.pop(topic, ()):
            event.set()

    def watched(self, topic: str) -> bool:
        """True while someone waits on ``topic``."""
        return bool(self._waiters.get(topic))

    async def wait(self, topic: str, within: float) -> bool:
        """Wait for a hint on ``topic`` for at most ``within`` seconds; True if one came."""
        event = anyio.Event()
        waiters = self._waiters.setdefault(topic, set())
        waiters.add(event)
        try:
            with anyio.move_on_after(within):
                await event.wait()
            return event.is_set()
        finally:
            left = self._waiters.get(topic)
            if left is not None:
                left.discard(event)
                if not left:
                    del self._waiters[topic]
