"""Calling a user function the way it was declared: awaited, inline, or in a worker thread."""

from __future__ import annotations

from typing import Any

import anyio

from .._callables import UserFn

__all__ = ("invoke",)


async def invoke(call: UserFn, args: tuple[Any, ...]) -> Any:
    """Call ``call`` with ``args``; a sync function runs in a worker thread unless inline.

    A cancel while the worker thread runs returns at once: the thread cannot be interrupted,
    so it is abandoned (it runs to its end) and what it returns is discarded.
    """
    if call.is_async:
        return await call.fn(*args)
    if call.inline:
        result = call.fn(*args)
    else:
        result = await anyio.to_thread.run_sync(call.fn, *args, abandon_on_cancel=True)
    if hasattr(result, "__await__"):
        result = await result
    return result
