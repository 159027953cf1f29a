"""Classifying user callables once, at build time: async or sync, and whether they take ctx.

Which parameter receives the NodeContext: the second positional parameter, when it has no
default, or is named ``ctx``, or is annotated ``NodeContext``; or ``*args``. A second parameter
with a default that is none of these (``async def node(s, i=i)``, the closure-in-a-loop idiom)
keeps its default.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from .exceptions import InvalidGraph

__all__ = ("UserFn", "check_reducer", "classify", "describe")


class UserFn(msgspec.Struct, frozen=True):
    """A node, branch or prompt callable, with how to call it."""

    fn: Callable[..., Any]
    is_async: bool
    takes_ctx: bool
    inline: bool


def describe(fn: Callable[..., Any]) -> str:
    """A readable name for messages and the graph hash: ``module.qualname``."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def classify(
    fn: Any, *, what: str, inline: bool = False, max_args: int = 2, arg: str = "state"
) -> UserFn:
    """Check a callable's arity and kind; raise TypeError naming ``what`` when it cannot be used.

    A node takes ``(state)`` or ``(state, ctx)``; ``max_args=1`` allows only ``(state)``;
    ``arg`` names the first argument in messages (``"item"`` for map nodes).
    """
    if not callable(fn):
        raise TypeError(f"{what} is not callable (got {type(fn).__name__})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: assume (state)
        return UserFn(fn, _is_async(fn), False, inline)
    positional = 0
    required = 0
    varargs = False
    ctx_param = False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
            if positional == 2:
                ctx_param = p.default is p.empty or p.name == "ctx" or _is_ctx_type(p.annotation)
            if p.default is p.empty:
                required += 1
        elif p.kind is p.VAR_POSITIONAL:
            varargs = True
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise TypeError(
                f"{what} ({describe(fn)}) has a required keyword-only argument {p.name!r}; "
                "graphexec passes only positional arguments"
            )
    shape = f"({arg}) or ({arg}, ctx)" if max_args == 2 else f"({arg})"
    if required > max_args or (positional == 0 and not varargs):
        raise TypeError(
            f"{what} ({describe(fn)}) takes {required if required else positional} "
            f"positional argument(s); it must take {shape}"
        )
    takes_ctx = ctx_param or (varargs and positional < 2)
    return UserFn(fn, _is_async(fn), takes_ctx, inline)


def _is_ctx_type(annotation: Any) -> bool:
    """``NodeContext``, ``gx.NodeContext | None`` or ``Optional[NodeContext]``, as a class or a
    string (``from __future__ import annotations``): matched by name, without importing it."""
    if isinstance(annotation, str):
        parts = annotation.replace("Optional[", "").replace("]", "").split("|")
        return any(p.strip().rsplit(".", 1)[-1] == "NodeContext" for p in parts)
    if getattr(annotation, "__name__", None) == "NodeContext":
        return True
    return any(_is_ctx_type(a) for a in typing.get_args(annotation))


def check_reducer(fn: Any, key: str) -> None:
    """Raise InvalidGraph naming ``key`` unless ``fn`` can be called as ``fn(current, value)``."""
    if not callable(fn):
        raise InvalidGraph(f"reducer for key {key!r} is not callable (got {type(fn).__name__})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        sig.bind(None, None)
    except TypeError as exc:
        raise InvalidGraph(
            f"reducer for key {key!r} ({describe(fn)}) cannot be called as "
            f"reducer(current, value): {exc}"
        ) from exc
