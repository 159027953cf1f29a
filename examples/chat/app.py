"""A chat app: a fake model that streams its reply token by token, and a tool call that waits
for a human's approval in the page.

Run it (needs the ``web`` extra) and open http://127.0.0.1:8000/:

    python examples/chat/app.py            # --db chat.db --port 8000 [--token SECRET]

Ask "what is the weather in Paris?": the model streams a reply, proposes the tool call
``weather(city="Paris")`` and waits; Approve runs the tool and streams the answer, Reject streams
a refusal, Edit changes the city first. Kill the server while the card waits, start it again:
the page reconnects, the card comes back, and Approve finishes the run. Each message is a turn of
one conversation (one trace id, in the page's URL).

The model is deterministic (no network, no weights): the reply and the tool call follow from
the words of the message, and each token is sent with ``ctx.emit({"token": ...})``.
``CHAT_TOKEN_DELAY`` (seconds, default 0.05) sets the pause between tokens.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import anyio

import graphexec as gx

TOKEN_DELAY = float(os.environ.get("CHAT_TOKEN_DELAY", "0.05"))

WEATHER = {"paris": "sunny, 21°C", "london": "light rain, 14°C", "tokyo": "cloudy, 18°C"}


def tokens(text: str) -> list[str]:
    """The text cut the way a model streams it: words with their leading space."""
    return re.findall(r"\s*\S+", text)


async def stream(ctx: gx.NodeContext, text: str) -> str:
    for token in tokens(text):
        await ctx.emit({"token": token})
        await anyio.sleep(TOKEN_DELAY)
    return text


def city_of(message: str) -> str:
    """The last capitalised word of the message (the fake model's "understanding")."""
    words = re.findall(r"[A-Z][a-zA-Z]+", message)
    return words[-1] if words else "Paris"


async def think(state: dict[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    message = str(state.get("message", ""))
    city = city_of(message)
    text = await stream(ctx, f"Let me look up the weather in {city}.")
    return {
        "messages": [{"role": "user", "content": message}, {"role": "assistant", "content": text}],
        "tool_call": {"tool": "weather", "args": {"city": city}},
    }


def ask(state: dict[str, Any]) -> dict[str, Any]:
    call = state["tool_call"]
    return {
        "text": f"Run {call['tool']}(city={call['args']['city']!r})?",
        "tool_call": call,
        # What the page's Edit box starts from: an update to the state.
        "update": {"tool_call": call},
    }


async def tool(state: dict[str, Any]) -> dict[str, Any]:
    city = state["tool_call"]["args"]["city"]
    return {"tool_result": WEATHER.get(city.lower(), "unknown weather")}


async def answer(state: dict[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    city = state["tool_call"]["args"]["city"]
    text = await stream(ctx, f"The weather in {city} is {state['tool_result']}.")
    return {"messages": [{"role": "assistant", "content": text}]}


async def declined(state: dict[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    reason = state["approve"].get("reason") or "no reason given"
    text = await stream(ctx, f"All right, I will not call the tool ({reason}).")
    return {"messages": [{"role": "assistant", "content": text}]}


graph = (
    gx.GraphBuilder("chat")
    .node("think", think)
    .barrier("approve", prompt=ask)
    .node("tool", tool, side_effects=True)
    .node("answer", answer)
    .node("declined", declined)
    .edge("think", "approve")
    .edge("approve", "tool", when=lambda s: s["approve"]["decision"] == "approve")
    .edge("approve", "declined")
    .edge("tool", "answer")
    .reducer("messages", gx.reducers.append)
    .start("think")
    .end("answer", "declined")
    .build()
)

graphs = [graph]
"""What ``graphexec serve examples/chat/app.py:graphs`` serves."""


def main() -> None:
    parser = argparse.ArgumentParser(description="The graphexec chat example server.")
    parser.add_argument("--db", default="chat.db", help="SQLite file (default chat.db)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args()

    from graphexec.web import serve

    def ready(url: str) -> None:
        print(f"chat: serving on {url}/ (store {args.db})", flush=True)

    anyio.run(
        lambda: serve(
            graphs,
            store=gx.SQLiteStore(args.db),
            host=args.host,
            port=args.port,
            token=args.token,
            on_ready=ready,
        )
    )


if __name__ == "__main__":
    main()
