"""Node and edge declarations: the types the builder makes, the validator checks and the
graph holds (one module, so ``_graph`` and ``_validate`` share them without importing each
other).

A node's ``kind`` says which of the optional fields apply; code that acts per kind dispatches
over :data:`NodeKind` with ``typing.assert_never`` (``_run/step.py``), so adding a kind (a
subgraph) makes the type checker point at every place that must handle it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias

import msgspec

from ._callables import UserFn, describe
from ._decisions import DefaultAction

__all__ = (
    "Branch",
    "Declarations",
    "Edge",
    "NodeKind",
    "NodeSpec",
    "OnError",
    "Validated",
)

NodeKind: TypeAlias = Literal["node", "parallel", "map", "barrier"]
OnError: TypeAlias = Literal["fail_fast", "collect", "continue"]
_ON_ERROR = ("fail_fast", "collect", "continue")
_DEFAULTS = ("approve", "reject", "skip")


class Branch(msgspec.Struct, frozen=True):
    """One branch of a static parallel node."""

    name: str
    call: UserFn
    fingerprint: str | None = None
    """The branch's own fingerprint (a re-run runs only the branches that changed)."""


class NodeSpec(msgspec.Struct, frozen=True):
    """A declared node; ``kind`` says which of the optional fields apply."""

    name: str
    kind: NodeKind
    call: UserFn | None = None
    """node: the function; map: the per-item function."""
    side_effects: bool = False
    branches: tuple[Branch, ...] = ()
    on_error: OnError = "fail_fast"
    over: str | None = None
    into: str | None = None
    max_concurrency: int | None = None
    prompt: UserFn | None = None
    timeout: float | None = None
    default: DefaultAction = "reject"
    record: str | None = None
    fingerprint: str | None = None
    """The node's fingerprint (``fingerprint=`` on the builder); None: known by name only."""


class Edge(msgspec.Struct, frozen=True):
    """``source -> target``: conditional (``when``), normal, or fallback."""

    source: str
    target: str
    kind: Literal["when", "normal", "fallback"]
    when: Callable[[Any], bool] | None = None

    @property
    def label(self) -> str:
        """How messages and diagrams name this edge."""
        if self.kind == "when" and self.when is not None:
            return f"{self.source} -> {self.target} when {describe(self.when)}"
        if self.kind == "fallback":
            return f"{self.source} -> {self.target} (fallback)"
        return f"{self.source} -> {self.target}"


class Declarations(Protocol):
    """What the validator reads from a builder (GraphBuilder has these)."""

    name: str
    state: type[msgspec.Struct] | None
    _nodes: list[tuple[str, Any]]
    _edges: list[Edge]
    _reducers: dict[str, Callable[[Any, Any], Any]]
    _start: list[str]
    _ends: list[str]
    _problems: list[str]


class Validated(msgspec.Struct, frozen=True):
    """A graph's checked parts, from which GraphBuilder.build() makes the Graph."""

    name: str
    nodes: dict[str, NodeSpec]
    edges: list[Edge]
    reducers: dict[str, Callable[[Any, Any], Any]]
    start: str
    ends: frozenset[str]
    state_type: type[msgspec.Struct] | None
