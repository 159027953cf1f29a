"""GraphBuilder and Graph: declaring nodes, edges and reducers, and the frozen, hashed result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from . import reducers as _reducers
from ._breaker import CircuitBreaker
from ._callables import classify, describe
from ._decisions import DefaultAction
from ._rerun.fingerprint import FingerprintOption, node_fingerprint
from ._retry import Retry
from ._spec import _DEFAULTS, _ON_ERROR, Branch, Edge, NodeKind, NodeSpec, OnError, OnFailure
from ._state import StateSpec
from ._validate import validate

__all__ = ("Branch", "Edge", "Graph", "GraphBuilder", "NodeKind", "NodeSpec", "OnError")


class _Routes(msgspec.Struct, frozen=True):
    conditional: tuple[Edge, ...]
    normal: Edge | None
    fallback: Edge | None
    targets: frozenset[str]


class Graph:
    """A validated, immutable graph; build one with :class:`GraphBuilder`."""

    __slots__ = (
        "_routes",
        "barrier_nodes",
        "decision_nodes",
        "edges",
        "ends",
        "hash",
        "name",
        "nodes",
        "reducers",
        "spec",
        "start",
        "state_type",
    )

    name: str
    nodes: Mapping[str, NodeSpec]
    edges: tuple[Edge, ...]
    reducers: Mapping[str, Callable[[Any, Any], Any]]
    start: str
    ends: frozenset[str]
    state_type: type[msgspec.Struct] | None
    hash: str
    barrier_nodes: frozenset[str]
    decision_nodes: frozenset[str]
    """Nodes that take decisions: barriers and nodes with ``on_failure="pause"``."""
    spec: StateSpec
    _routes: dict[str, _Routes]

    def __init__(
        self,
        *,
        name: str,
        nodes: dict[str, NodeSpec],
        edges: list[Edge],
        reducers: dict[str, Callable[[Any, Any], Any]],
        start: str,
        ends: frozenset[str],
        state_type: type[msgspec.Struct] | None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "nodes", MappingProxyType(dict(nodes)))
        setattr_(self, "edges", tuple(edges))
        setattr_(self, "reducers", MappingProxyType(dict(reducers)))
        setattr_(self, "start", start)
        setattr_(self, "ends", ends)
        setattr_(self, "state_type", state_type)
        setattr_(self, "spec", StateSpec(reducers, state_type))
        setattr_(
            self,
            "barrier_nodes",
            frozenset(n for n, s in nodes.items() if s.kind == "barrier"),
        )
        setattr_(
            self,
            "decision_nodes",
            frozenset(
                n for n, s in nodes.items() if s.kind == "barrier" or s.on_failure == "pause"
            ),
        )
        routes = {}
        for n in nodes:
            out = [e for e in edges if e.source == n]
            routes[n] = _Routes(
                conditional=tuple(e for e in out if e.kind == "when"),
                normal=next((e for e in out if e.kind == "normal"), None),
                fallback=next((e for e in out if e.kind == "fallback"), None),
                targets=frozenset(e.target for e in out),
            )
        setattr_(self, "_routes", routes)
        setattr_(self, "hash", self._structural_hash())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Graph {self.name!r} is immutable; build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Graph {self.name!r} is immutable; build a new one")

    def __repr__(self) -> str:
        return f"<Graph {self.name!r} nodes={len(self.nodes)} hash={self.hash[:12]}>"

    def structure(self) -> dict[str, Any]:
        """The parts of the graph that the hash covers, as plain data."""

        def node_data(s: NodeSpec) -> dict[str, Any]:
            data: dict[str, Any] = {"kind": s.kind, "side_effects": s.side_effects}
            if s.kind == "parallel":
                data["branches"] = [b.name for b in s.branches]
                data["on_error"] = s.on_error
            elif s.kind == "map":
                data.update(over=s.over, into=s.into, on_error=s.on_error)
            elif s.kind == "barrier":
                data.update(timeout=s.timeout, default=s.default, record=s.record)
            # Routing-relevant resilience settings, only when set (older hashes stay valid).
            if s.on_failure not in (None, "fail"):
                data["on_failure"] = s.on_failure
            if s.compensate is not None:
                data["compensate"] = s.compensate
            return data

        return {
            "name": self.name,
            "start": self.start,
            "ends": sorted(self.ends),
            "nodes": {n: node_data(s) for n, s in sorted(self.nodes.items())},
            "edges": [
                [e.source, e.target, e.kind, describe(e.when) if e.when else None]
                for e in self.edges
            ],
            "reducers": {
                k: _reducers.BUILTIN_NAMES.get(r) or describe(r)
                for k, r in sorted(self.reducers.items())
            },
            "state_type": describe(self.state_type) if self.state_type else None,
        }

    def _structural_hash(self) -> str:
        import hashlib  # loads OpenSSL: worth deferring from import time to build time

        return hashlib.sha256(msgspec.json.encode(self.structure())).hexdigest()

    def routes(self, node: str) -> _Routes:
        """The edges out of ``node``, split by kind (internal to the executor)."""
        return self._routes[node]

    def to_mermaid(self) -> str:
        """A Mermaid flowchart: parallel nodes as subroutines, barriers as hexagons."""
        lines = ["flowchart TD", "    __start__([start])"]
        for name, s in self.nodes.items():
            ident = _mermaid_id(name)
            label = name.replace('"', "'")
            shape = {
                "node": f'["{label}"]',
                "parallel": f'[["{label}"]]',
                "map": f'[["{label} (map)"]]',
                "barrier": f'{{{{"{label}"}}}}',
            }[s.kind]
            lines.append(f"    {ident}{shape}")
        lines.append(f"    __start__ --> {_mermaid_id(self.start)}")
        for e in self.edges:
            src, dst = _mermaid_id(e.source), _mermaid_id(e.target)
            if e.kind == "when" and e.when is not None:
                cond = _condition_label(e.when)
                lines.append(f'    {src} -- "{cond}" --> {dst}')
            elif e.kind == "fallback":
                lines.append(f"    {src} -. fallback .-> {dst}")
            else:
                lines.append(f"    {src} --> {dst}")
        lines.append("    __end__([end])")
        lines.extend(f"    {_mermaid_id(n)} --> __end__" for n in sorted(self.ends))
        return "\n".join(lines) + "\n"


def _condition_label(fn: Callable[..., Any]) -> str:
    """A Mermaid-safe label for a condition: its name, or ``lambda@<line>`` for a lambda."""
    name = describe(fn).rsplit(".", 1)[-1]
    if name == "<lambda>":
        code = getattr(fn, "__code__", None)
        name = f"lambda@{code.co_firstlineno}" if code is not None else "lambda"
    return name.replace('"', "'").replace("<", "").replace(">", "")


def _mermaid_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return f"n_{safe}"


class GraphBuilder:
    """Declare a graph step by step; ``build()`` validates it and returns a :class:`Graph`.

    Example::

        graph = (
            gx.GraphBuilder("bot")
            .node("classify", classify)
            .edge("classify", "answer")
            .node("answer", answer)
            .start("classify")
            .end("answer")
            .build()
        )
    """

    def __init__(
        self,
        name: str,
        state: type[msgspec.Struct] | None = None,
        *,
        fingerprint: FingerprintOption = None,
    ) -> None:
        self.name = name
        self.state = state
        self.fingerprint = fingerprint
        """The default ``fingerprint=`` of the nodes (``"auto"`` turns fingerprints on)."""
        self._nodes: list[tuple[str, Any]] = []
        self._edges: list[Edge] = []
        self._reducers: dict[str, Callable[[Any, Any], Any]] = {}
        self._start: list[str] = []
        self._ends: list[str] = []
        self._problems: list[str] = []
        self._defaults: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"GraphBuilder({self.name!r}, nodes={len(self._nodes)})"

    def _add(self, name: str, make: Callable[[], NodeSpec]) -> GraphBuilder:
        if not isinstance(name, str) or not name:
            self._problems.append(f"node names must be non-empty strings, got {name!r}")
            return self
        if "#" in name:
            self._problems.append(f"node name {name!r} must not contain '#'")
        try:
            self._nodes.append((name, make()))
        except (TypeError, ValueError) as exc:
            self._problems.append(str(exc))
            self._nodes.append((name, None))
        return self

    def node(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        inline: bool = False,
        side_effects: bool = False,
        retry: Retry | None = None,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        on_failure: OnFailure | None = None,
        compensate: str | None = None,
        breaker: CircuitBreaker | None = None,
        fingerprint: FingerprintOption | Literal["default"] = "default",
        deps: Sequence[Any] = (),
    ) -> GraphBuilder:
        """A node ``fn(state)`` or ``fn(state, ctx)``; sync ones run in a worker thread unless
        ``inline=True``. ``side_effects=True`` makes a checkpoint follow it (not repeated on
        resume).

        Resilience (README "Resilience"): ``retry=gx.Retry(...)``, ``timeout`` (seconds, per
        attempt), ``heartbeat_timeout`` (seconds without ``ctx.heartbeat()``), ``on_failure``
        (``"fail"``, ``"skip"``, ``"fallback"``, ``"compensate"``, ``"pause"``),
        ``compensate`` (the node that undoes this one), ``breaker=gx.CircuitBreaker(...)``;
        each defaults to the builder's ``defaults()``. ``fingerprint``: ``"auto"`` (a hash of
        the code, closure, config and ``deps``), a version str, a callable returning one, or
        None; defaults to the builder's (README "Re-runs and fingerprints")."""
        return self._add(
            name,
            lambda: NodeSpec(
                name=name,
                kind="node",
                call=classify(fn, what=f"node {name!r}", inline=inline),
                side_effects=side_effects,
                fingerprint=self._fingerprint(
                    name,
                    fingerprint,
                    [fn],
                    {"kind": "node", "inline": inline, "side_effects": side_effects},
                    deps,
                ),
                retry=retry,
                timeout=timeout,
                heartbeat_timeout=heartbeat_timeout,
                on_failure=on_failure,
                compensate=compensate,
                breaker=breaker,
            ),
        )

    def _fingerprint(
        self,
        name: str,
        option: FingerprintOption | Literal["default"],
        fns: Sequence[Callable[..., Any]],
        config: dict[str, Any],
        deps: Sequence[Any],
    ) -> str | None:
        chosen = self.fingerprint if option == "default" else option
        return node_fingerprint(chosen, fns, config=config, deps=list(deps), what=f"node {name!r}")

    def parallel(
        self,
        name: str,
        branches: Mapping[str, Callable[..., Any]],
        *,
        on_error: OnError = "fail_fast",
        inline: bool = False,
        side_effects: bool = False,
        fingerprint: FingerprintOption | Literal["default"] = "default",
        deps: Sequence[Any] = (),
        retry: Retry | None = None,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        on_failure: OnFailure | None = None,
        compensate: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> GraphBuilder:
        """Run every branch concurrently on the same state; merge their deltas in declaration
        order. ``on_error``: ``fail_fast``, ``collect`` or ``continue``. ``retry`` and
        ``timeout`` apply to each branch; ``on_failure`` to the node once its branches
        failed (see ``node()``)."""

        def make() -> NodeSpec:
            if not isinstance(branches, Mapping) or not branches:
                raise ValueError(f"parallel node {name!r} needs a non-empty mapping of branches")
            _check_on_error(name, on_error)
            chosen = self.fingerprint if fingerprint == "default" else fingerprint
            return NodeSpec(
                name=name,
                kind="parallel",
                branches=tuple(
                    Branch(
                        b,
                        classify(fn, what=f"branch {b!r} of node {name!r}", inline=inline),
                        node_fingerprint(
                            chosen,
                            [fn],
                            config={"kind": "branch", "name": b, "inline": inline},
                            deps=list(deps),
                            what=f"branch {b!r} of node {name!r}",
                        ),
                    )
                    for b, fn in branches.items()
                ),
                on_error=on_error,
                side_effects=side_effects,
                fingerprint=self._fingerprint(
                    name,
                    fingerprint,
                    list(branches.values()),
                    {
                        "kind": "parallel",
                        "branches": list(branches),
                        "on_error": on_error,
                        "inline": inline,
                        "side_effects": side_effects,
                    },
                    deps,
                ),
                retry=retry,
                timeout=timeout,
                heartbeat_timeout=heartbeat_timeout,
                on_failure=on_failure,
                compensate=compensate,
                breaker=breaker,
            )

        return self._add(name, make)

    def map(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        over: str,
        into: str,
        max_concurrency: int | None = None,
        on_error: OnError = "fail_fast",
        inline: bool = False,
        side_effects: bool = False,
        fingerprint: FingerprintOption | Literal["default"] = "default",
        deps: Sequence[Any] = (),
        retry: Retry | None = None,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        on_failure: OnFailure | None = None,
        compensate: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> GraphBuilder:
        """Run ``fn(item)`` or ``fn(item, ctx)`` once per item of ``state[over]``, at most
        ``max_concurrency`` at a time, and append the results in item order to ``into``."""

        def make() -> NodeSpec:
            _check_on_error(name, on_error)
            if max_concurrency is not None and max_concurrency < 1:
                raise ValueError(f"map node {name!r}: max_concurrency must be >= 1")
            for label, key in (("over", over), ("into", into)):
                if not isinstance(key, str) or not key:
                    raise ValueError(f"map node {name!r}: {label}= must be a state key")
            return NodeSpec(
                name=name,
                kind="map",
                call=classify(fn, what=f"map node {name!r}", inline=inline, arg="item"),
                over=over,
                into=into,
                max_concurrency=max_concurrency,
                on_error=on_error,
                side_effects=side_effects,
                fingerprint=self._fingerprint(
                    name,
                    fingerprint,
                    [fn],
                    {
                        "kind": "map",
                        "over": over,
                        "into": into,
                        "on_error": on_error,
                        "inline": inline,
                        "side_effects": side_effects,
                    },
                    deps,
                ),
                retry=retry,
                timeout=timeout,
                heartbeat_timeout=heartbeat_timeout,
                on_failure=on_failure,
                compensate=compensate,
                breaker=breaker,
            )

        return self._add(name, make)

    def barrier(
        self,
        name: str,
        *,
        prompt: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        default: DefaultAction = "reject",
        record: str | None = None,
        retry: Retry | None = None,
    ) -> GraphBuilder:
        """Pause until a decision arrives (approve, reject, edit); on ``timeout`` seconds apply
        ``default``. The decision is written to ``state[record]`` (default: the node name).
        ``retry`` is refused by build() (a barrier calls no node to retry)."""

        def make() -> NodeSpec:
            if default not in _DEFAULTS:
                raise ValueError(
                    f"barrier {name!r}: default must be one of {', '.join(_DEFAULTS)}, "
                    f"got {default!r}"
                )
            if timeout is not None and not timeout > 0:
                raise ValueError(f"barrier {name!r}: timeout must be > 0 seconds or None")
            return NodeSpec(
                name=name,
                kind="barrier",
                prompt=classify(prompt, what=f"prompt of barrier {name!r}", max_args=1)
                if prompt is not None
                else None,
                timeout=timeout,
                default=default,
                record=record or name,
                retry=retry,
            )

        return self._add(name, make)

    def defaults(
        self,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        on_failure: OnFailure | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> GraphBuilder:
        """Builder-wide resilience defaults for every node, parallel and map node (declared
        before or after this call) that does not set its own; barriers are not affected. A
        node opts out of a default retry with ``retry=gx.Retry(attempts=1)``."""
        given = {
            "retry": retry,
            "timeout": timeout,
            "heartbeat_timeout": heartbeat_timeout,
            "on_failure": on_failure,
            "breaker": breaker,
        }
        self._defaults.update({k: v for k, v in given.items() if v is not None})
        return self

    def edge(
        self, source: str, target: str, *, when: Callable[[Any], bool] | None = None
    ) -> GraphBuilder:
        """``source -> target``; with ``when``, taken if the predicate holds on the new state."""
        if when is not None and not callable(when):
            self._problems.append(f"edge {source} -> {target}: when= must be callable")
            when = None
        self._edges.append(Edge(source, target, "when" if when else "normal", when))
        return self

    def fallback(self, source: str, target: str) -> GraphBuilder:
        """Taken when ``source`` returns ``gx.Fallback``, or when no other edge matches."""
        self._edges.append(Edge(source, target, "fallback"))
        return self

    def reducer(self, key: str, fn: Callable[[Any, Any], Any]) -> GraphBuilder:
        """Combine deltas for ``key`` with ``fn(current, value)`` instead of overwriting."""
        if not callable(fn):
            self._problems.append(f"reducer for key {key!r} is not callable")
        else:
            self._reducers[key] = fn
        return self

    def start(self, name: str) -> GraphBuilder:
        """The node a run begins at."""
        self._start.append(name)
        return self

    def end(self, *names: str) -> GraphBuilder:
        """Nodes after which the run finishes."""
        self._ends.extend(names)
        return self

    def build(self) -> Graph:
        """Validate and freeze; raises InvalidGraph listing every problem found."""
        v = validate(self)
        return Graph(
            name=v.name,
            nodes=v.nodes,
            edges=v.edges,
            reducers=v.reducers,
            start=v.start,
            ends=v.ends,
            state_type=v.state_type,
        )


def _check_on_error(name: str, on_error: str) -> None:
    if on_error not in _ON_ERROR:
        raise ValueError(
            f"node {name!r}: on_error must be one of {', '.join(_ON_ERROR)}, got {on_error!r}"
        )
