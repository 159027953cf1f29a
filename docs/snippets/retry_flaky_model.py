"""How-to: retry a flaky model call (docs/how-to/retry.md shows this file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx


class ModelError(Exception):
    """What a model SDK raises; `status_code` is how graphexec tells 4xx from 5xx."""

    def __init__(self, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(f"model API answered {status_code}")
        self.status_code = status_code
        self.retry_after = retry_after


class FlakyModel:
    """A stand-in for a model client: it fails with the given statuses, then answers."""

    def __init__(self, failures: list[ModelError]) -> None:
        self.failures = failures
        self.calls = 0

    async def complete(self, prompt: str, *, idempotency_key: str) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return f"answer to {prompt!r}"


model = FlakyModel([ModelError(503), ModelError(429, retry_after=0.05)])


# --8<-- [start:node]
async def ask_model(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, str]:
    try:
        text = await model.complete(state["question"], idempotency_key=ctx.idempotency_key)
    except ModelError as exc:
        if exc.retry_after is not None:  # the API said when to come back
            raise gx.RetryAfter(exc.retry_after) from exc
        if exc.status_code == 400:  # our request is wrong: retrying cannot help
            raise gx.NonRetryable(f"model refused the prompt: {exc}") from exc
        raise  # a 5xx: retried with backoff
    return {"answer": text}


graph = (
    gx.GraphBuilder("ask")
    .node(
        "ask_model",
        ask_model,
        retry=gx.Retry(attempts=4, backoff=0.05, max_backoff=2.0),
        timeout=30,  # one attempt may take 30 s at most
    )
    .start("ask_model")
    .end("ask_model")
    .build()
)
# --8<-- [end:node]


async def main() -> None:
    # --8<-- [start:run]
    ex = gx.GraphExecutor()
    async with ex.execute_stream(graph, {"question": "What is 2 + 2?"}) as run:
        async for event in run:
            if isinstance(event, gx.NodeRetry):
                print(
                    f"attempt {event.attempt} failed ({event.error.message}),"
                    f" next in {event.wait:.2f} s"
                )
    print(run.result.status, run.result.state["answer"])
    # --8<-- [end:run]
    assert model.calls == 3

    # --8<-- [start:exhausted]
    model.failures = [ModelError(503)] * 4
    try:
        await ex.execute(graph, {"question": "Still there?"})
    except gx.RetriesExhausted as exc:
        print(f"{exc.node} gave up after {exc.attempts} attempts: {exc.errors[-1]}")
    # --8<-- [end:exhausted]

    model.failures = [ModelError(400)]
    try:
        await ex.execute(graph, {"question": "???"})
    except gx.NodeExecutionFailed as exc:
        print(f"{exc.node} failed at once: {exc.cause}")


anyio.run(main)
