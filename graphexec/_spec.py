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

from ._breaker import CircuitBreaker
from ._callables import UserFn, describe
from ._decisions import DefaultAction
from ._retry import Retry

__all__ = (
    "Branch",
    "Declarations",
    "Edge",
    "NodeKind",
    "NodeSpec",
    "OnError",
    "OnFailure",
    "Validated",
)

NodeKind: TypeAlias = Literal["node", "parallel", "map", "barrier"]
OnError: TypeAlias = Literal["fail_fast", "collect", "continue"]
_ON_ERROR = ("fail_fast", "collect", "continue")
OnFailure: TypeAlias = Literal["fail", "skip", "fallback", "compensate", "pause"]
_ON_FAILURE = ("fail", "skip", "fallback", "compensate", "pause")
ERRORS_KEY = "errors"
"""The state key ``on_failure="skip"`` records errors under (``{"<node>": {...}}``, merged)."""
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
    """barrier: seconds until the default action; node, parallel, map: the bound on one
    attempt (of each branch or item)."""
    default: DefaultAction = "reject"
    record: str | None = None
    fingerprint: str | None = None
    """The node's fingerprint (``fingerprint=`` on the builder); None: known by name only."""
    retry: Retry | None = None
    """node, parallel, map: how failed calls are retried (parallel/map: per branch or item)."""
    heartbeat_timeout: float | None = None
    """Fail an attempt that goes this long without ``ctx.heartbeat()``."""
    on_failure: OnFailure | None = None
    """What a failure (after retries) does; None until build() applies the builder default."""
    compensate: str | None = None
    """The node that undoes this one (run by a later ``on_failure="compensate"``)."""
    breaker: CircuitBreaker | None = None
    resilient: bool = False
    """Set by build(): the node has a retry, a timeout, a heartbeat timeout or a breaker."""
    guarded: bool = False
    """Set by build(): each attempt needs setting up (a timeout, a heartbeat timeout or a
    breaker); a node with only a retry is called directly until it fails."""


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
    _defaults: dict[str, Any]


class Validated(msgspec.Struct, frozen=True):
    """A graph's checked parts, from which GraphBuilder.build() makes the Graph."""

    name: str
    nodes: dict[str, NodeSpec]
    edges: list[Edge]
    reducers: dict[str, Callable[[Any, Any], Any]]
    start: str
    ends: frozenset[str]
    state_type: type[msgspec.Struct] | None
