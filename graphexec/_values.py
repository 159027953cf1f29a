"""What a state value may be, so that a restored run sees exactly what the running one saw.

A checkpoint stores the state as msgpack and restore decodes it without a schema (untyped
state) or converts it to the state Struct (typed state). Some Python values do not survive that:
a tuple comes back as a list, a set as a list, a ``Decimal``, ``UUID``, ``date`` or naive
``datetime`` as a string, a Struct or dataclass as a dict. A resumed run would then differ from
an uninterrupted one, so such values are refused when the node writes them (a
:class:`StateError` naming the node and the key, and what to use instead), with or without a
store: a graph must not change behaviour the day a store is added.

Untyped state takes: ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, ``list``, ``dict`` (keys ``str`` or ``int``) and ``datetime`` with a UTC
offset of zero, nested at most :data:`MAX_DEPTH` deep. Typed state converts its fields through
their annotations (a ``tuple[int, int]`` field comes back a tuple), so only the depth is
checked there, and the untyped rules apply to fields annotated ``Any``.

Names that end up as store keys (trace ids, graph and node names) are checked here too.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from .exceptions import InvalidTraceId, StateError

__all__ = (
    "LEAVES",
    "MAX_DEPTH",
    "MAX_NAME",
    "check_trace_id",
    "check_value",
    "name_problem",
)

MAX_DEPTH = 500
"""How deeply a value may nest (a list in a list counts 2). msgpack encoding and decoding
recurse once per level on the C stack and count against Python's recursion limit (1,000 by
default): 500 leaves room for the caller's own frames, so a checkpoint written anywhere loads
anywhere, and a value nested 2,000 deep is refused at the node instead of failing the run
with a RecursionError."""

MAX_NAME = 256
"""Longest trace id, graph name or node name, in characters."""

_UTC_OFFSET = datetime.timedelta(0)

LEAVES = frozenset({str, int, float, bool, type(None), bytes})
"""Types that come back from msgpack as themselves, whole. An int past msgpack's 64 bits
(-2**63 to 2**64 - 1) is not refused here: checking every int's range would cost the common
step (``{"n": n + 1}``) more than it is worth, and such an int still never restores wrong: the
checkpoint that would hold it fails with a CheckpointError naming the node and the key."""

_INSTEAD: dict[type, str] = {
    tuple: "a list",
    set: "a sorted list",
    frozenset: "a sorted list",
    bytearray: "bytes",
    memoryview: "bytes",
    datetime.date: "an ISO string (date.isoformat())",
    datetime.time: "an ISO string (time.isoformat())",
    datetime.timedelta: "a number of seconds (td.total_seconds())",
}
"""What to write instead, for the common types that would come back as another."""


def check_value(value: Any, *, node: str | None, key: str, typed: bool = False) -> None:
    """Refuse ``value`` for state key ``key`` if it would not come back from a checkpoint as
    the same value and type, or nests deeper than MAX_DEPTH (StateError naming node and key).

    ``typed``: the key belongs to a typed state whose annotation converts the value back; only
    the depth is checked.
    """
    # The common cases first, with no call and no allocation: W1's {"n": n + 1} and an
    # appended list of scalars (W4's {"items": [i]}) go through here.
    t = type(value)
    if t in LEAVES:
        return
    if t is list:
        for item in value:
            if type(item) not in LEAVES:
                break
        else:
            return
    _walk(value, node, key, typed)


def _walk(value: Any, node: str | None, key: str, typed: bool) -> None:
    # Iterative, not recursive: the point is to refuse values too deep for the stack.
    # ``seen`` maps a container's id to the deepest level it was walked at: met again no
    # deeper, its subtree is known to fit (a structure shared many times is walked once per
    # depth, not once per path); met deeper, it is walked again, so a cycle keeps getting
    # deeper until the depth limit names it.
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen: dict[int, int] = {}
    while stack:
        v, depth = stack.pop()
        t = type(v)
        if t in LEAVES:
            continue
        if depth > MAX_DEPTH:
            raise StateError(
                f"node {node!r} wrote key {key!r} with a value nested more than {MAX_DEPTH} "
                "levels deep (or one that contains itself): it could not be checkpointed and "
                "restored safely; flatten it",
                key=key,
                node=node,
            )
        if t is list or t is dict or (typed and isinstance(v, list | dict | tuple | set)):
            if seen.get(id(v), 0) >= depth:
                continue
            seen[id(v)] = depth
            # Leaves are checked in place: only containers and odd values go on the stack.
            if t is dict or isinstance(v, dict):
                for k, item in v.items():
                    kt = type(k)
                    if kt is not str and kt is not int and not typed:
                        _refuse(k, node, key, f"a dict key of type {kt.__name__}", "str keys")
                    if type(item) not in LEAVES:
                        stack.append((item, depth + 1))
            else:
                for item in v:
                    if type(item) not in LEAVES:
                        stack.append((item, depth + 1))
            continue
        if t is datetime.datetime:
            if typed or v.utcoffset() == _UTC_OFFSET:
                continue
            if v.tzinfo is None:
                _refuse(
                    v,
                    node,
                    key,
                    "a naive datetime",
                    "an aware one in UTC (dt.replace(tzinfo=datetime.UTC)) or an ISO string",
                )
            _refuse(
                v,
                node,
                key,
                f"a datetime with UTC offset {v.utcoffset()}",
                "one in UTC (dt.astimezone(datetime.UTC)); the offset would be lost",
            )
        if typed:
            if isinstance(v, msgspec.Struct):
                if seen.get(id(v), 0) >= depth:
                    continue
                seen[id(v)] = depth
                stack.extend((getattr(v, f), depth + 1) for f in v.__struct_fields__)
            continue  # the field's annotation converts it back
        instead = _INSTEAD.get(t)
        if instead is None:
            if isinstance(v, msgspec.Struct) or hasattr(t, "__dataclass_fields__"):
                instead = "a dict, or a typed state (GraphBuilder(name, state=MyStruct))"
            elif isinstance(v, list | dict | str | int | float):
                instead = f"a plain {t.__mro__[-2].__name__}"
            else:
                instead = "plain data (dict, list, str, int, float, bool, None, bytes)"
        name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
        _refuse(v, node, key, f"a value of type {name}", instead)


def _refuse(value: Any, node: str | None, key: str, what: str, instead: str) -> None:
    where = f"node {node!r} wrote key {key!r}" if node is not None else f"key {key!r} holds"
    raise StateError(
        f"{where} with {what} ({value!r:.60}): it would come back as another value or type "
        f"after a checkpoint is restored; use {instead}",
        key=key,
        node=node,
    )


def name_problem(what: str, name: object) -> str | None:
    """Why ``name`` cannot be a trace id, graph name or node name (``what`` says which), or None.

    Names are stored as SQLite text and compared across processes: they must be ``str``,
    1 to MAX_NAME characters, with no NUL (C strings end there) and no lone surrogates (they
    cannot be encoded as UTF-8).
    """
    if type(name) is not str:
        return f"{what} must be a str, not {type(name).__name__} {name!r:.60}"
    if not name:
        return f"{what} must not be empty"
    if len(name) > MAX_NAME:
        return f"{what} {name[:40]!r}... is {len(name)} characters long; at most {MAX_NAME}"
    if "\x00" in name:
        return f"{what} {name!r:.80} contains a NUL character"
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return f"{what} {name!r:.80} contains a lone surrogate (not encodable as UTF-8)"
    return None


def check_trace_id(trace_id: object) -> str:
    """``trace_id`` if it is a usable trace id, else InvalidTraceId saying why."""
    if (
        type(trace_id) is str
        and 0 < len(trace_id) <= MAX_NAME
        and trace_id.isascii()
        and "\x00" not in trace_id
    ):
        return trace_id  # the usual uuid hex or slug, checked without an encode
    problem = name_problem("trace id", trace_id)
    if problem is None:
        return trace_id  # type: ignore[return-value]  # name_problem checked it is a str
    raise InvalidTraceId(
        problem, trace_id=trace_id if type(trace_id) is str and len(trace_id) < 1000 else None
    )
