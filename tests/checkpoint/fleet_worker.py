"""The processes of a worker fleet, for test_workers_chaos.py and benches/workers.py.

    python fleet_worker.py worker <store url> <graph> <journal> <concurrency> <poll> <lease_ttl>
    python fleet_worker.py decider <store url> <graph> <decisions file> <barriers> <poll>

``worker`` runs ``gx.Worker`` over one graph of :func:`graph` until SIGTERM (a graceful stop,
exit 0) or SIGKILL; it prints ``READY <pid>`` once its store answers, and ``DONE`` with its
counters after a graceful stop. The fleet graph can also be driven by the command line's
worker: ``graphexec worker --graphs fleet_worker:FLEET`` with this folder on ``PYTHONPATH`` and
the journal's path in ``$GRAPHEXEC_FLEET_JOURNAL``. ``decider`` is the process that answers barriers: it polls the
store's waiting runs and decides each pending barrier once, through its own executor
(``ex.decide``), with the decision :func:`decision_for` picks from the trace id; it appends
``<trace> <barrier> <kind> <time>`` to its decisions file and exits after ``<barriers>``.

The ``fleet`` graph journals every execution of its side-effecting nodes to ``<journal>``: one
line written with ``O_APPEND`` (``<trace> <node> <step> <idempotency key> <pid> <time>``)
before the node's work, so a SIGKILL between the side effect and its checkpoint shows up as a
journal line no committed checkpoint covers.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

import graphexec as gx
from graphexec.checkpoint import open_store

NODE_SECONDS = 0.25
"""The side-effecting nodes' work after their journal line: long enough for kills to land
inside it often (a side effect done, its checkpoint not written)."""


def append(path: str, line: str) -> None:
    """Append one line to a file: one write with ``O_APPEND`` (whole lines, whatever the
    number of processes writing; a SIGKILL after it loses nothing)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def journal(path: str, ctx: gx.NodeContext) -> None:
    """Journal one execution of a side-effecting node."""
    line = f"{ctx.trace_id} {ctx.node} {ctx.step} {ctx.idempotency_key} {os.getpid()} "
    append(path, line + f"{time.time():.6f}\n")


def fleet_graph(journal_path: str) -> gx.Graph:
    """``prep -> charge (side effects) -> approve (barrier) -> ship (side effects) | decline``:
    approved (or edited) runs ship the amount, rejected ones decline."""

    async def charge(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        journal(journal_path, ctx)
        await anyio.sleep(NODE_SECONDS)
        return {"charged": state["amount"]}

    async def ship(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        journal(journal_path, ctx)
        await anyio.sleep(NODE_SECONDS)
        return {"shipped": state["amount"]}

    return (
        gx.GraphBuilder("fleet")
        .node("prep", lambda s: {"prepared": True}, inline=True)
        .node("charge", charge, side_effects=True)
        .barrier("approve", prompt=lambda s: {"amount": s["amount"]})
        .node("ship", ship, side_effects=True)
        .node("decline", lambda s: {"declined": True}, inline=True)
        .edge("prep", "charge")
        .edge("charge", "approve")
        .edge("approve", "ship", when=lambda s: s["approve"]["decision"] == "approve")
        .edge("approve", "decline")
        .start("prep")
        .end("ship", "decline")
        .build()
    )


SHORT_NODES = 4
"""Nodes in the bench's short graphs."""


def short_graph(*, gate: bool) -> gx.Graph:
    """The bench's short graph: ``SHORT_NODES`` nodes that count, and with ``gate`` a barrier
    after the first of them."""

    async def count(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": state["n"] + 1}

    name = "gate" if gate else "short"
    b = gx.GraphBuilder(name)
    names = [f"n{i}" for i in range(SHORT_NODES)]
    for n in names:
        b.node(n, count)
    chain = [names[0], "approve", *names[1:]] if gate else names
    if gate:
        b.barrier("approve")
    for a, c in itertools.pairwise(chain):
        b.edge(a, c)
    return b.start(chain[0]).end(chain[-1]).build()


JOURNAL_ENV = "GRAPHEXEC_FLEET_JOURNAL"

FLEET = fleet_graph(os.environ.get(JOURNAL_ENV, os.devnull))
"""The fleet graph journaling to ``$GRAPHEXEC_FLEET_JOURNAL``: what ``graphexec worker
--graphs fleet_worker:FLEET`` drives."""


def graph(name: str, journal_path: str = os.devnull) -> gx.Graph:
    """A graph of the fleet by name: ``fleet`` (the chaos test's), ``short`` or ``gate``."""
    if name == "fleet":
        return fleet_graph(journal_path)
    if name in ("short", "gate"):
        return short_graph(gate=name == "gate")
    raise SystemExit(f"unknown graph {name!r}: fleet, short or gate")


def policy(name: str) -> gx.CheckpointPolicy:
    """``fleet``: the default policy (side effects and barriers checkpoint); the bench's
    graphs checkpoint every step."""
    return gx.CheckpointPolicy() if name == "fleet" else gx.CheckpointPolicy(every_step=True)


def decision_for(trace_id: str) -> gx.Decision:
    """The decision the decider gives a trace (``<prefix>-<n>``): approve, reject and edit in
    turn by ``n``."""
    n = int(trace_id.rsplit("-", 1)[1])
    if n % 3 == 0:
        return gx.Approve()
    if n % 3 == 1:
        return gx.Reject(f"no {trace_id}")
    return gx.Edit({"amount": 1000 + n})


def kind(decision: gx.Decision) -> str:
    """A decision's tag: ``approve``, ``reject``, ``edit`` or ``skip``."""
    return str(type(decision).__struct_config__.tag)


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def work(
    url: str, graph_name: str, journal_path: str, concurrency: int, poll: float, ttl: float
) -> None:
    """Run a worker until SIGTERM."""
    async with open_store(url) as store:
        await store.runs(limit=1)  # open it (and migrate) before saying READY
        worker = gx.Worker(
            store,
            graphs=[graph(graph_name, journal_path)],
            concurrency=concurrency,
            poll_interval=poll,
            lease_ttl=ttl,
            policy=policy(graph_name),
        )

        async def stop_on_sigterm(*, task_status: TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                task_status.started()
                async for _ in signals:
                    worker.stop()
                    return

        async with anyio.create_task_group() as tg:
            await tg.start(stop_on_sigterm)
            say("READY", os.getpid())
            await worker.run()
            tg.cancel_scope.cancel()
        say("DONE", msgspec.json.encode(worker.stats).decode())


async def decide(url: str, graph_name: str, out: str, barriers: int, poll: float) -> None:
    """Decide ``barriers`` barriers, each once, as they appear."""
    async with open_store(url) as store:
        ex = gx.GraphExecutor(store=store, graphs=[graph(graph_name)])
        decided: set[tuple[str, str]] = set()
        say("READY", os.getpid())
        while len(decided) < barriers:
            for info in await store.runs(status="waiting", limit=barriers + 100):
                barrier = info.pending_barrier
                if barrier is None or (info.trace_id, barrier) in decided:
                    continue
                decision = decision_for(info.trace_id)
                await ex.decide(info.trace_id, barrier, decision)
                decided.add((info.trace_id, barrier))
                line = f"{info.trace_id} {barrier} {kind(decision)} {time.time():.6f}\n"
                append(out, line)
            await anyio.sleep(poll)
    say("DONE", len(decided))


def main(argv: list[str]) -> None:
    mode, url, graph_name, path = argv[:4]
    if mode == "worker":
        concurrency, poll, ttl = int(argv[4]), float(argv[5]), float(argv[6])
        anyio.run(functools.partial(work, url, graph_name, path, concurrency, poll, ttl))
    elif mode == "decider":
        anyio.run(functools.partial(decide, url, graph_name, path, int(argv[4]), float(argv[5])))
    else:
        raise SystemExit(f"unknown mode {mode!r}: worker or decider")


if __name__ == "__main__":
    # Build the graphs from the module imported by name, as the processes that queue and
    # audit do: Graph.hash names an edge condition by its module ("__main__" here otherwise).
    import fleet_worker

    fleet_worker.main(sys.argv[1:])
