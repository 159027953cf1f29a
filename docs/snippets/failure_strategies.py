"""Concepts: on_failure strategies and circuit breakers (docs/concepts/resilience.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx

log: list[str] = []


async def reserve(state: Mapping[str, Any]) -> dict[str, Any]:
    log.append("reserve")
    return {"reserved": True}


async def release(state: Mapping[str, Any]) -> dict[str, Any]:
    log.append("release")  # undoes reserve
    return {"reserved": False}


async def charge(state: Mapping[str, Any]) -> dict[str, Any]:
    log.append("charge")
    if state.get("card") == "expired":
        raise ConnectionError("payment gateway down")
    return {"charged": True}


async def notify(state: Mapping[str, Any]) -> None:
    raise OSError("mail server unreachable")


async def done(state: Mapping[str, Any]) -> None:
    return None


# --8<-- [start:graph]
graph = (
    gx.GraphBuilder("checkout")
    .node("reserve", reserve, compensate="release")  # undone by "release" if the run fails
    .node("release", release)  # only a compensation: needs no edges
    .node("charge", charge, on_failure="compensate")
    .node("notify", notify, on_failure="skip")  # recorded under state["errors"], run goes on
    .node("done", done)
    .edge("reserve", "charge")
    .edge("charge", "notify")
    .edge("notify", "done")
    .start("reserve")
    .end("done")
    .build()
)
# --8<-- [end:graph]


async def main() -> None:
    ex = gx.GraphExecutor()
    # --8<-- [start:skip]
    result = await ex.execute(graph, {"card": "valid"})
    print(result.status, result.state["errors"])
    # --8<-- [end:skip]
    assert result.state["errors"]["notify"]["type"] == "OSError"

    log.clear()
    # --8<-- [start:compensate]
    try:
        await ex.execute(graph, {"card": "expired"})
    except gx.NodeExecutionFailed as exc:
        print(exc.node, "failed; ran:", log)  # reserve, charge, then release
    # --8<-- [end:compensate]
    assert log == ["reserve", "charge", "release"]

    # --8<-- [start:pause]
    attempts = 0

    async def ship(state: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("warehouse API down")
        return {"shipped": True}

    paused = (
        gx.GraphBuilder("ship").node("ship", ship, on_failure="pause").start("ship").end("ship")
    ).build()
    async with ex.execute_stream(paused, {}) as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):  # the failed node waits like a barrier
                print(event.barrier_id, event.prompt)
                await run.handle.approve(event.barrier_id)  # run it again
    print(run.result.status, run.result.state)
    # --8<-- [end:pause]
    assert run.result.state == {"shipped": True}

    # --8<-- [start:breaker]
    async def lookup(state: Mapping[str, Any]) -> None:
        raise ConnectionError("inventory service down")

    guarded = (
        gx.GraphBuilder("stock")
        .node("lookup", lookup, breaker=gx.CircuitBreaker(failures=2, cooldown=30))
        .start("lookup")
        .end("lookup")
        .build()
    )
    for _ in range(3):  # the breaker is shared by every run of this executor
        async with ex.execute_stream(guarded, {}) as run:
            async for event in run:
                if isinstance(event, gx.CircuitChanged):
                    print("breaker", event.state, "after", event.failures, "failures")
        print(run.result.status, type(run.result.error).__name__)
    # --8<-- [end:breaker]
    assert isinstance(run.result.error, gx.CircuitOpen)


anyio.run(main)
