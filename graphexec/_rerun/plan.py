"""Planning a re-run: which executions of the source trace a re-run from a node reuses, which
run again and why, without running or writing anything.

The plan walks the source trace's executions in order, replaying their recorded deltas, and
keeps the set of state keys whose value may differ in the re-run (``dirty``), each with the
execution (or the update) that made it differ. An execution runs again when it is the target,
when its node's fingerprint changed, or when it read a dirty key; it is reused otherwise. The
keys an execution that runs again writes become dirty; a reused one writes its recorded values,
so the keys it overwrites become clean again (a key it extends through a reducer stays dirty).

A plan is an upper bound along the source's path: an execution marked ``run`` because it read
what an upstream execution writes is still reused at execution time when the upstream output
comes out unchanged (early cut-off). Routing is evaluated again on the replayed state: where an
edge condition reads only known values and now picks another node than the source took, the
path diverges and the rest of the source is ``not_reached``; where it reads an output still to
be computed (or the node that runs again returned a directive), the path is only known when the
re-run runs, so every later execution is planned to ``run`` (``routing_changed``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

from .._apply import TornUpdate, apply_changes
from .._graph import Graph
from .._run.routing import route
from .._view import StateView
from ..checkpoint._record import StepRecord
from ..exceptions import GraphError, NodeNotFound
from .reuse import directive_of
from .source import Source, encode_inputs

__all__ = (
    "PlanAction",
    "PlanReason",
    "PlanRow",
    "ReasonKind",
    "RerunPlan",
    "check_target",
    "fingerprints_digest",
    "make_plan",
)

PlanAction: TypeAlias = Literal["reuse", "run", "not_reached"]
ReasonKind: TypeAlias = Literal[
    "target",
    "downstream_of",
    "fingerprint_changed",
    "input_changed",
    "new_node",
    "missing_prior_output",
    "routing_changed",
    "barrier_needs_decision",
]


class PlanReason(msgspec.Struct, frozen=True, kw_only=True):
    """Why an execution runs again (or is not reached)."""

    kind: ReasonKind
    keys: list[str] = msgspec.field(default_factory=list)
    """``input_changed``: the keys of the update it read; ``downstream_of``: the keys it read
    that ``upstream`` writes."""
    upstream: str | None = None
    """``downstream_of`` and ``routing_changed``: the execution (``node@step``) it follows."""
    old: str | None = None
    """``fingerprint_changed``: the fingerprint recorded when it ran."""
    new: str | None = None
    """``fingerprint_changed``: the node's fingerprint now."""

    def __str__(self) -> str:
        kind = self.kind
        if kind == "downstream_of":
            return f"downstream_of {self.upstream} ({', '.join(self.keys)})"
        if kind == "input_changed":
            return f"input_changed ({', '.join(self.keys)})"
        if kind == "fingerprint_changed":
            return f"fingerprint_changed ({self.old or 'none'} -> {self.new or 'none'})"
        if kind == "routing_changed" and self.upstream is not None:
            return f"routing_changed after {self.upstream}"
        return kind


class PlanRow(msgspec.Struct, frozen=True, kw_only=True):
    """One execution of the source trace (or one the re-run adds) and what happens to it."""

    step: int | None
    """The source step; None for an execution the source does not have."""
    node: str
    occurrence: int
    """The nth execution of the node."""
    action: PlanAction
    reasons: list[PlanReason] = msgspec.field(default_factory=list)
    root: str | None = None
    """For a ``run`` row: the root cause it traces back to (``"node@step: target"``,
    ``"update: key, ..."``)."""
    side_effects: bool = False
    """The node is declared ``side_effects=True``."""
    new_idempotency_key: bool = False
    """It runs again with side effects: its ``ctx.idempotency_key`` is a new one (the re-run's
    trace id), so an external API sees a new request."""


class RerunPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ex.rerun(graph, trace_id, from_node, update=...)`` would do; ``print(plan)``
    shows it as a table."""

    trace_id: str
    """The source trace."""
    from_node: str
    update: dict[str, Any] | None
    source_seq: int
    """The source's latest checkpoint when planned (a later one makes the plan stale)."""
    source_status: str
    graph_hash: str
    fingerprints: str
    """A digest of the graph's node fingerprints when planned."""
    rows: list[PlanRow]

    def counts(self) -> dict[str, int]:
        """Rows per action."""
        out = {"reuse": 0, "run": 0, "not_reached": 0}
        for row in self.rows:
            out[row.action] += 1
        return out

    def table(self) -> str:
        """The plan as a plain-text table, one line per row."""
        head = ("step", "node", "action", "reasons", "root cause")
        lines = [head]
        for r in self.rows:
            reasons = "; ".join(str(x) for x in r.reasons)
            if r.new_idempotency_key:
                reasons = f"{reasons}; side effects: new idempotency key"
            lines.append(
                (
                    "-" if r.step is None else str(r.step),
                    r.node if r.occurrence == 1 else f"{r.node} #{r.occurrence}",
                    r.action,
                    reasons,
                    r.root or "",
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = [
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        ]
        out.insert(1, "  ".join("-" * w for w in widths))
        counts = self.counts()
        out.append(
            f"re-run of {self.trace_id} from {self.from_node}: {counts['run']} to run, "
            f"{counts['reuse']} reused, {counts['not_reached']} not reached"
        )
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def fingerprints_digest(graph: Graph) -> str:
    """A digest of every node's fingerprint (a plan made with other code is stale)."""
    import hashlib

    data = msgspec.json.encode(sorted((n, s.fingerprint) for n, s in graph.nodes.items()))
    return hashlib.sha256(data).hexdigest()[:20]


def check_target(source: Source, graph: Graph, target: str) -> None:
    """NodeNotFound unless ``target`` is a node of ``graph`` that ran in the source (or is
    where the source stopped: a failed node, a waiting barrier)."""
    if target not in graph.nodes:
        raise NodeNotFound(
            f"cannot re-run from {target!r}: graph {graph.name!r} has no such node",
            node=target,
            trace_id=source.trace_id,
        )
    if target != source.stopped_at and (target, 1) not in source.by_occurrence:
        ran = sorted({e.node for e in source.execs})
        raise NodeNotFound(
            f"cannot re-run trace {source.trace_id!r} from {target!r}: it never ran there "
            f"(nodes it ran: {', '.join(ran) or 'none'})",
            node=target,
            trace_id=source.trace_id,
        )


def make_plan(
    source: Source, graph: Graph, target: str, update: dict[str, Any] | None
) -> RerunPlan:
    """Plan a re-run of ``source`` from ``target`` on ``graph``; NodeNotFound when the target is
    not a node of the graph or never ran in the source (and is not where it stopped)."""
    check_target(source, graph, target)
    execs = source.execs
    stopped_at = source.stopped_at
    replayer = source.replayer
    state: dict[str, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(source.initial))
    typed = graph.state_type is not None
    dirty: dict[str, str] = {}  # key -> the execution label (or "update") that makes it differ
    unknown: set[str] = set()  # keys written by executions that run again: values not known yet
    roots: dict[str, str] = {}  # execution label -> its root cause
    update_changes = list(update.items()) if update else []
    update_keys = sorted({k for k, _ in update_changes})
    rows: list[PlanRow] = []
    diverged: str | None = None
    uncertain: str | None = None  # the first execution after which the path is not known
    seen: set[str] = set()

    def apply_update() -> None:
        nonlocal update_changes
        if not update_changes:
            return
        before = {k: encode_inputs(state, (k,)) for k in update_keys}
        try:
            apply_changes(graph.spec, state, update_changes, node=None, writer="the re-run update")
        except TornUpdate as torn:
            raise torn.error from torn.error.__cause__
        for k in update_keys:
            if encode_inputs(state, (k,)) != before[k]:  # an update to the same value is none
                dirty[k] = "update"
        update_changes = []

    for i, e in enumerate(execs):
        for record in e.updates_before:  # a re-run's own update, when re-running a re-run
            replayer.apply(state, record, e.seq)
        if diverged is not None:
            rows.append(
                PlanRow(
                    step=e.step,
                    node=e.node,
                    occurrence=e.occurrence,
                    action="not_reached",
                    reasons=[PlanReason(kind="routing_changed", upstream=diverged)],
                )
            )
            continue
        spec = graph.nodes.get(e.node)
        label = e.label
        if spec is None:
            rows.append(
                PlanRow(
                    step=e.step,
                    node=e.node,
                    occurrence=e.occurrence,
                    action="not_reached",
                    reasons=[PlanReason(kind="routing_changed")],
                )
            )
            diverged = label
            continue
        if e.node == target:
            apply_update()
        reasons: list[PlanReason] = []
        root: str | None = None
        if e.node == target:
            reasons.append(PlanReason(kind="target"))
            root = f"{label}: target"
        if e.fingerprint != spec.fingerprint:
            reasons.append(
                PlanReason(kind="fingerprint_changed", old=e.fingerprint, new=spec.fingerprint)
            )
            root = root or f"{label}: fingerprint_changed"
        read = set(e.keys_read) if e.keys_read is not None else set(state) | set(dirty)
        hits = sorted(k for k in read if k in dirty)
        from_update = [k for k in hits if dirty[k] == "update"]
        if from_update:
            reasons.append(PlanReason(kind="input_changed", keys=from_update))
            root = root or f"update: {', '.join(from_update)}"
        upstream: dict[str, list[str]] = {}
        for k in hits:
            if dirty[k] != "update":
                upstream.setdefault(dirty[k], []).append(k)
        for up, keys in upstream.items():
            reasons.append(PlanReason(kind="downstream_of", upstream=up, keys=keys))
            root = root or roots.get(up)
        if not reasons and uncertain is not None:
            # The path after ``uncertain`` depends on an output still to be computed: this
            # execution may not be reached, or see other inputs (written on another path).
            reasons.append(PlanReason(kind="routing_changed", upstream=uncertain))
            root = roots.get(uncertain)
        if reasons and spec.kind == "barrier":
            reasons.append(PlanReason(kind="barrier_needs_decision"))
        action: PlanAction = "run" if reasons else "reuse"
        if action == "run":
            roots[label] = root or label
        rows.append(
            PlanRow(
                step=e.step,
                node=e.node,
                occurrence=e.occurrence,
                action=action,
                reasons=reasons,
                root=roots.get(label) if action == "run" else None,
                side_effects=spec.side_effects,
                new_idempotency_key=action == "run" and spec.side_effects,
            )
        )
        seen.add(e.node)
        replayer.apply(state, StepRecord(e.step, e.node, e.deltas), e.seq)
        for d in e.deltas:
            if action == "run":
                dirty[d.key] = label
                unknown.add(d.key)
            elif d.overwrite or replayer.reducer(d.key, e.seq) is None:
                dirty.pop(d.key, None)  # the recorded value again, as in the source
                unknown.discard(d.key)
        # Routing, evaluated again: certain only where the conditions read clean keys.
        if action == "run" and e.route is not None:
            uncertain = uncertain or label  # the node decides its route again when it runs
            continue
        expected = execs[i + 1].node if i + 1 < len(execs) else stopped_at
        view = None if typed else StateView(state)
        try:
            nxt = route(graph, state, e.node, directive_of(e.route), view)
        except GraphError:
            nxt = None
        reads = set(view.keys_read) if view is not None else set(state)
        if any(k in unknown for k in reads):
            uncertain = uncertain or label
            continue
        if nxt == expected:
            continue
        diverged = label
        if nxt is not None:
            new_reasons = [PlanReason(kind="routing_changed", upstream=label)]
            if not any(x.node == nxt for x in execs):
                new_reasons.append(PlanReason(kind="new_node"))
            nspec = graph.nodes[nxt]
            rows.append(
                PlanRow(
                    step=None,
                    node=nxt,
                    occurrence=sum(1 for r in rows if r.node == nxt and r.action != "not_reached")
                    + 1,
                    action="run",
                    reasons=new_reasons,
                    root=roots.get(label, f"{label}: routing_changed"),
                    side_effects=nspec.side_effects,
                    new_idempotency_key=nspec.side_effects,
                )
            )
    if diverged is None and stopped_at is not None and stopped_at in graph.nodes:
        # Where the source stopped: a failed node (no output recorded) or a waiting barrier.
        spec = graph.nodes[stopped_at]
        if stopped_at == target:
            apply_update()
        reasons = [PlanReason(kind="target")] if stopped_at == target else []
        if source.last.pending_barrier is not None:
            reasons.append(PlanReason(kind="barrier_needs_decision"))
        else:
            reasons.append(PlanReason(kind="missing_prior_output"))
        occurrence = sum(1 for e in execs if e.node == stopped_at) + 1
        label = f"{stopped_at}@{source.last.step + 1}"
        rows.append(
            PlanRow(
                step=None,
                node=stopped_at,
                occurrence=occurrence,
                action="run",
                reasons=reasons,
                root=f"{label}: {reasons[0].kind}",
                side_effects=spec.side_effects,
                new_idempotency_key=spec.side_effects,
            )
        )
    return RerunPlan(
        trace_id=source.trace_id,
        from_node=target,
        update=dict(update) if update else None,
        source_seq=source.last_seq,
        source_status=source.last.status,
        graph_hash=graph.hash,
        fingerprints=fingerprints_digest(graph),
        rows=rows,
    )
