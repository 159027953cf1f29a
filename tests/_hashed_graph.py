"""A graph built the same way in the test process and in a subprocess, to compare hashes.

Run as a script it prints the hash of ``build()``; the hash tests import it too.
"""

from __future__ import annotations

from typing import Any

import graphexec as gx


def noop(state: Any) -> None:
    """A node that changes nothing."""


def needs_review(state: Any) -> bool:
    """An edge condition."""
    return bool(state.get("risky"))


def build() -> gx.Graph:
    """A graph touching every part the hash covers: kinds, edges, reducers, several ends."""
    return (
        gx.GraphBuilder("hashed")
        .node("classify", noop)
        .parallel("research", {"orders": noop, "policy": noop}, on_error="collect")
        .map("summarise", noop, over="docs", into="summaries", max_concurrency=2)
        .barrier("approve", timeout=60, default="reject")
        .node("refund", noop, side_effects=True)
        .node("decline", noop)
        .node("escalate", noop)
        .edge("classify", "research")
        .edge("research", "summarise")
        .edge("summarise", "escalate", when=needs_review)
        .edge("summarise", "approve")
        .edge("approve", "refund")
        .fallback("refund", "decline")
        .reducer("messages", gx.reducers.append)
        .reducer("total", gx.reducers.add)
        .start("classify")
        .end("refund", "decline", "escalate")
        .build()
    )


if __name__ == "__main__":
    print(build().hash)
