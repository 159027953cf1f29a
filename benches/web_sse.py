"""The web server's event stream: emit-to-client latency, and many clients on one server.

    python benches/web_sse.py [--tokens 400] [--clients 200] [--fan-tokens 200]

The server (``graphexec.web.serve`` with a SQLite store) runs in a subprocess; the clients (httpx,
one task each) run here. Two measurements, one table:

- **latency**: one client follows a run whose node sends ``ctx.emit({"t": time.monotonic()})``
  every 5 ms; the latency of a token is the client's ``time.monotonic()`` when its SSE frame is
  parsed minus ``t`` (both processes read the same CLOCK_MONOTONIC). Median and p99.
- **fan-out**: ``--clients`` clients follow one run (connected while it waits at a gate barrier,
  then the gate is approved); the run emits ``--fan-tokens`` tokens 5 ms apart. Reported: every
  client got every event exactly once, in order (nothing dropped), the server's peak RSS and its
  CPU time over the run (from /proc), and the time from the approval to the last client's
  ``GraphComplete``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec

import graphexec as gx

HERE = Path(__file__).resolve()


async def emitter(state: dict[str, Any], ctx: gx.NodeContext) -> None:
    for _ in range(int(state["n"])):
        await ctx.emit({"t": time.monotonic()})
        await anyio.sleep(0.005)


graph = (
    gx.GraphBuilder("bench-sse")
    .barrier("gate")
    .node("emit", emitter)
    .edge("gate", "emit")
    .start("gate")
    .end("emit")
    .build()
)


def serve(db: str, port: int) -> None:
    from graphexec.web import serve as run_server

    def ready(url: str) -> None:
        print(f"serving on {url}", flush=True)

    anyio.run(lambda: run_server([graph], store=gx.SQLiteStore(db), port=port, on_ready=ready))


# -- the client side ---------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, peak RSS in KiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return cpu, hwm


async def follow(
    client: httpx.AsyncClient, trace: str, arrivals: list[tuple[float, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every event of the trace, until GraphComplete; (arrival, event) pairs into arrivals."""
    out: list[dict[str, Any]] = []
    data: list[str] = []
    async with client.stream("GET", f"/runs/{trace}/events") as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                event = msgspec.json.decode("\n".join(data))
                data = []
                if arrivals is not None:
                    arrivals.append((time.monotonic(), event))
                out.append(event)
                if event["type"] == "GraphComplete":
                    break
    return out


async def start_gated(client: httpx.AsyncClient, trace: str, n: int) -> None:
    r = await client.post("/runs", json={"trace_id": trace, "input": {"n": n}})
    r.raise_for_status()


async def approve(client: httpx.AsyncClient, trace: str) -> None:
    r = await client.post(
        f"/runs/{trace}/decisions",
        json={"barrier_id": "gate#1", "decision": {"type": "approve"}},
    )
    r.raise_for_status()


async def wait_waiting(client: httpx.AsyncClient, trace: str) -> None:
    while (await client.get(f"/runs/{trace}")).json()["status"] != "waiting":  # noqa: ASYNC110
        await anyio.sleep(0.01)


async def bench(url: str, pid: int, args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        # Latency.
        await start_gated(client, "lat", args.tokens)
        await wait_waiting(client, "lat")
        arrivals: list[tuple[float, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, client, "lat", arrivals)
            await anyio.sleep(0.2)
            await approve(client, "lat")
        lat = sorted((at - e["data"]["t"]) * 1000 for at, e in arrivals if e["type"] == "Custom")
        assert len(lat) == args.tokens, (len(lat), args.tokens)
        rows.append(("emit -> SSE frame, median", f"{statistics.median(lat):.2f} ms"))
        rows.append(("emit -> SSE frame, p99", f"{lat[int(len(lat) * 0.99) - 1]:.2f} ms"))

        # Fan-out.
        await start_gated(client, "fan", args.fan_tokens)
        await wait_waiting(client, "fan")
        results: list[list[dict[str, Any]]] = []

        async def one() -> None:
            results.append(await follow(client, "fan"))

        cpu0, _ = proc_stats(pid)
        async with anyio.create_task_group() as tg:
            for _ in range(args.clients):
                tg.start_soon(one)
            await anyio.sleep(1.0 + args.clients * 0.01)  # every client connected
            t0 = time.monotonic()
            await approve(client, "fan")
        elapsed = time.monotonic() - t0
        cpu1, hwm = proc_stats(pid)
    reference = [e["event_id"] for e in results[0]]
    complete = sum(
        1
        for r in results
        if [e["event_id"] for e in r] == reference
        and sum(e["type"] == "Custom" for e in r) == args.fan_tokens
    )
    assert sorted(set(reference)) == reference
    rows.append((f"{args.clients} clients: complete, in order", f"{complete}/{args.clients}"))
    rows.append((f"{args.clients} clients: events each", f"{len(reference)}"))
    rows.append(("server peak RSS", f"{hwm / 1024:.1f} MiB"))
    rows.append(("server CPU during the fan-out", f"{cpu1 - cpu0:.2f} s"))
    rows.append(("approval -> last client done", f"{elapsed:.2f} s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--fan-tokens", type=int, default=200)
    parser.add_argument("--serve", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(HERE), "--serve", str(Path(tmp) / "b.db"), str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            while "serving on" not in log.read_text():
                if proc.poll() is not None:
                    raise SystemExit(log.read_text())
                time.sleep(0.05)
            rows = anyio.run(bench, f"http://127.0.0.1:{port}", proc.pid, args)
        finally:
            proc.terminate()
            proc.wait(20)
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
