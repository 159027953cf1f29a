"""Wake-up hints in one process: a notify wakes every current waiter at once; none is kept."""

from __future__ import annotations

import anyio
import pytest

from graphexec.checkpoint import MemoryStore
from graphexec.checkpoint._hints import WORK, Hints, events_topic

pytestmark = pytest.mark.anyio


async def test_notify_wakes_every_waiter_of_the_topic_only() -> None:
    hints = Hints()
    woken: list[str] = []

    async def wait(name: str, topic: str) -> None:
        if await hints.wait(topic, 5.0):
            woken.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "a", WORK)
        tg.start_soon(wait, "b", WORK)
        tg.start_soon(wait, "c", events_topic("t1"))
        await anyio.wait_all_tasks_blocked()
        assert hints.watched(WORK) and hints.watched("events:t1")
        hints.notify(WORK)
        await anyio.wait_all_tasks_blocked()
        assert sorted(woken) == ["a", "b"]
        tg.cancel_scope.cancel()
    assert not hints.watched(WORK) and not hints.watched("events:t1")


async def test_a_hint_with_no_waiter_is_not_kept() -> None:
    store = MemoryStore()
    store.hints.notify(WORK)
    with anyio.fail_after(5):
        assert await store.wait_for(WORK, 0.01) is False
