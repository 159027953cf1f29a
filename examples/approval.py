"""A refund bot that pauses for a human's approval, durable across processes.

    python examples/approval.py                 # interactive: answer at the terminal prompt
    python examples/approval.py --auto          # approve through run.handle, in one process
    python examples/approval.py start --trace T # run until the approval waits, then exit
    python examples/approval.py resume --trace T --approve   (or --reject "reason")
    python examples/approval.py --demo          # start in one process, resume+approve in another

Checkpoints go to a SQLite file (default ``.demo/approval.db``), so a run paused in one process
is picked up by its trace id in another, days later if need be.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import structlog

import graphexec as gx

DB = Path(".demo/approval.db")


# -- the graph --------------------------------------------------------------------------------


def fake_model_assess(ticket: str) -> dict[str, object]:
    """A deterministic stand-in for an LLM call."""
    amount = 120.0 if "blender" in ticket else 35.0
    return {"amount": amount, "reason": "item arrived damaged", "confidence": 0.92}


async def assess(state):
    return {"assessment": fake_model_assess(state["ticket"]), "log": ["assessed the ticket"]}


async def approval_prompt(state):
    a = state["assessment"]
    return {
        "question": f"Refund {a['amount']:.2f} EUR to the customer?",
        "ticket": state["ticket"],
        "reason": a["reason"],
    }


async def refund(state, ctx: gx.NodeContext):
    # A real payment API would receive ctx.idempotency_key, so a re-run after a crash does not
    # pay twice. The fake one just records it.
    amount = state["assessment"]["amount"]
    return {"refunded": amount, "payment_key": ctx.idempotency_key, "log": ["refund paid"]}


async def decline(state):
    why = (state.get("approval") or {}).get("reason") or "not approved"
    return {"refunded": 0.0, "log": [f"refund declined: {why}"]}


graph = (
    gx.GraphBuilder("refund-bot")
    .node("assess", assess)
    .barrier("approval", prompt=approval_prompt, timeout=7 * 24 * 3600, default="reject")
    .node("refund", refund, side_effects=True)
    .node("decline", decline)
    .edge("assess", "approval")
    .edge("approval", "refund", when=lambda s: s["approval"]["decision"] == "approve")
    .edge("approval", "decline")
    .reducer("log", gx.reducers.append)
    .start("assess")
    .end("refund", "decline")
    .build()
)


# -- driving it ---------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def report(result: gx.GraphResult) -> None:
    state = result.state
    say(f"result: {result.status}; refunded {state.get('refunded', 0):.2f} EUR")
    say(f"log: {state.get('log')}")


async def start(trace_id: str, ticket: str, mode: str) -> None:
    """Run until the barrier waits; then decide (interactive / auto) or leave (start only)."""
    executor = gx.GraphExecutor(store=gx.SQLiteStore(DB))
    async with executor.execute_stream(graph, {"ticket": ticket}, trace_id=trace_id) as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                say(f"waiting at {event.barrier_id}: {event.prompt['question']}")
                if mode == "start":
                    say(
                        f"paused; resume with: python examples/approval.py resume --trace {trace_id}"
                    )
                    break  # leaving checkpoints the wait; the run stays resumable
                if mode == "auto":
                    await run.handle.approve(event.barrier_id)
                else:
                    answer = await anyio.to_thread.run_sync(input, "approve? [y/n] ")
                    if answer.strip().lower().startswith("y"):
                        await run.handle.approve(event.barrier_id)
                    else:
                        await run.handle.reject(event.barrier_id, "declined at the terminal")
            elif isinstance(event, gx.CheckpointSaved):
                say(f"  checkpoint #{event.seq} ({event.kind}, {event.bytes} B, {event.trigger})")
    if run.result.status != "waiting":
        report(run.result)
    await executor.store.aclose()  # type: ignore[union-attr]


async def resume(trace_id: str, reject: str | None) -> None:
    """Another process: look the run up by trace id, decide through the store, resume it."""
    store = gx.SQLiteStore(DB)
    executor = gx.GraphExecutor(store=store)
    saved = await executor.get_state(trace_id)
    pending = saved.pending_barrier
    say(f"found run {trace_id}: {saved.status} at step {saved.step}")
    if pending is not None:
        decision = gx.Reject(reject) if reject else gx.Approve()
        await store.submit_decision(trace_id, pending.barrier_id, decision)
        say(f"submitted {type(decision).__name__} for {pending.barrier_id}")
    async with executor.resume_from(graph, trace_id) as run:
        async for event in run:
            if isinstance(event, gx.BarrierResolved):
                say(f"{event.barrier_id} resolved: {event.decision} (by {event.by})")
    report(run.result)
    await store.aclose()


def demo() -> None:
    """What `make demo` runs: pause in one process, resume and approve in a second one."""
    trace_id = f"demo-{uuid.uuid4().hex[:8]}"
    me = [sys.executable, __file__]
    say(f"== process 1: start run {trace_id}")
    subprocess.run([*me, "start", "--trace", trace_id], check=True)
    say("== process 1 exited; process 2 resumes the run by its trace id and approves")
    subprocess.run([*me, "resume", "--trace", trace_id, "--approve"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["start", "resume"])
    parser.add_argument("--trace", default=None)
    parser.add_argument("--ticket", default="My blender arrived broken, I want a refund.")
    parser.add_argument("--auto", action="store_true", help="approve through the handle")
    parser.add_argument("--demo", action="store_true", help="two processes, no input needed")
    parser.add_argument("--approve", action="store_true", help="with resume (the default)")
    parser.add_argument("--reject", default=None, metavar="REASON", help="with resume")
    parser.add_argument("--db", type=Path, default=DB)
    args = parser.parse_args()
    globals()["DB"] = args.db
    args.db.parent.mkdir(parents=True, exist_ok=True)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.demo:
        demo()
    elif args.command == "resume":
        if not args.trace:
            parser.error("resume needs --trace")
        anyio.run(resume, args.trace, args.reject)
    else:
        trace_id = args.trace or f"refund-{uuid.uuid4().hex[:8]}"
        mode = "start" if args.command == "start" else "auto" if args.auto else "interactive"
        anyio.run(start, trace_id, args.ticket, mode)


if __name__ == "__main__":
    main()
