"""The reuse rule of a re-run, asked by the run loop before every node execution.

The nth execution of a node in the re-run is matched with the nth execution of that node in the
source trace. It is reused (its recorded deltas and directive replayed instead of calling the
node) when all of these hold:

- it is not the target of the re-run (every execution of the target runs);
- the node's fingerprint is the one recorded (no fingerprint on either side counts as equal:
  such a node is known by its name only);
- the state keys it read hold the values they held when it ran (compared as encoded bytes;
  unknown keys, as for typed state and barriers, mean the whole state).

This holds anywhere in the re-run, downstream of the target too: an execution whose inputs come
out unchanged is reused (early cut-off), and so is a loop's iteration until the first one whose
inputs differ. Nodes are assumed deterministic in the state they read (what a cache assumes).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._directives import End, Fallback, Goto, Overwrite
from .._graph import NodeSpec
from ..checkpoint._record import KeptOutputs, RecordedRoute
from .source import UPDATE_NODE, Source, SourceExec, encode_inputs

__all__ = ("Reuse", "directive_of", "replayed_changes")


class Reuse:
    """One re-run's matching state: occurrences seen so far, the update still to apply."""

    __slots__ = ("counts", "replays_updates", "source", "target", "update")

    update_node = UPDATE_NODE
    """The node name the update is recorded under."""

    def __init__(
        self, source: Source, target: str | None, update: list[tuple[str, Any]] | None
    ) -> None:
        self.source = source
        self.target = target
        """The node every execution of which runs; None: a resume that invalidates."""
        self.update = update
        """The re-run's ``update=``, applied just before the target's first execution."""
        self.counts: dict[str, int] = {}
        self.replays_updates = any(e.updates_before for e in source.execs)
        """The source is itself a re-run with an update to replay."""

    def take_update(self, node: str) -> list[tuple[str, Any]] | None:
        """Changes to apply before this arrival at ``node``: the updates the source recorded
        just before its matching execution (when re-running a re-run), then this re-run's
        ``update=`` when ``node`` is the target reached for the first time."""
        if not self.replays_updates and (node != self.target or not self.update):
            return None  # the common case, asked at every step: nothing to apply
        out: list[tuple[str, Any]] = []
        found = self.source.by_occurrence.get((node, self.counts.get(node, 0) + 1))
        if found is not None:
            for record in found.updates_before:
                out.extend(
                    (d.key, Overwrite(d.value) if d.overwrite else d.value) for d in record.deltas
                )
        if node == self.target and self.update:
            out.extend(self.update)
            self.update = None
        return out or None

    def match(self, spec: NodeSpec, state: dict[str, Any]) -> SourceExec | None:
        """The source execution to replay for this execution of ``spec``, or None (run it)."""
        name = spec.name
        occurrence = self.counts[name] = self.counts.get(name, 0) + 1
        if name == self.target:
            return None
        found = self.source.by_occurrence.get((name, occurrence))
        if found is None or found.fingerprint != spec.fingerprint:
            return None
        if encode_inputs(state, found.keys_read) != found.inputs:
            return None
        return found

    def kept_for(
        self, spec: NodeSpec, state: dict[str, Any], step: int
    ) -> tuple[KeptOutputs, dict[str, list[str] | None]] | None:
        """For a fan-out node that runs again: the outputs of the matching source execution
        that still stand, as kept outputs (the fan-out then runs only the other branches or
        items), with the recorded reads of those branches. None when nothing can be kept: the
        target, no matching execution, or nothing unchanged."""
        name = spec.name
        if name == self.target:
            return None
        found = self.source.by_occurrence.get((name, self.counts.get(name, 0)))
        if found is None:
            return None
        if spec.kind == "map":
            results = self._map_results(spec, found, state)
            reads: dict[str, list[str] | None] = {}
        else:
            results, reads = self._branch_results(spec, found, state)
        if not results:
            return None
        return KeptOutputs(node=name, step=step, results=results), reads

    @staticmethod
    def _map_results(spec: NodeSpec, found: SourceExec, state: dict[str, Any]) -> dict[str, Any]:
        """Map items: an item the source mapped keeps its result (a result depends on the item
        alone), found by the item's encoded value; not when the function changed, or when the
        source's results do not line up with its items (some failed)."""
        if found.fingerprint != spec.fingerprint or not found.inputs:
            return {}
        recorded = msgspec.msgpack.decode(found.inputs)
        deltas = found.deltas
        if (
            len(recorded) != 1
            or not isinstance(recorded[0], list)
            or not deltas
            or deltas[0].key != spec.into
            or not isinstance(deltas[0].value, list)
            or len(deltas[0].value) != len(recorded[0])
        ):
            return {}
        encode = msgspec.msgpack.encode
        table = {encode(item): r for item, r in zip(recorded[0], deltas[0].value, strict=True)}
        items = state.get(spec.over) if spec.over is not None else None
        if not isinstance(items, list):
            return {}
        out: dict[str, Any] = {}
        for i, item in enumerate(items):
            try:
                key = encode(item)
            except (TypeError, ValueError):
                continue
            if key in table:
                out[f"{spec.name}[{i}]"] = table[key]
        return out

    @staticmethod
    def _branch_results(
        spec: NodeSpec, found: SourceExec, state: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, list[str] | None]]:
        """Parallel branches whose own fingerprint and read values are unchanged keep their
        recorded deltas, handed back as the mapping a branch returns (a branch that wrote a key
        twice or through ``gx.Overwrite`` runs again: kept outputs are checkpointed as plain
        data when the node fails, and must read back the same)."""
        if not found.branches or not found.branch_inputs:
            return {}, {}
        fingerprints = {b.name: b.fingerprint for b in spec.branches}
        results: dict[str, Any] = {}
        reads: dict[str, list[str] | None] = {}
        start = 0
        for record, recorded in zip(found.branches, found.branch_inputs, strict=True):
            deltas = found.deltas[start : start + record.deltas]
            start += record.deltas
            if record.name not in fingerprints or fingerprints[record.name] != record.fingerprint:
                continue
            keys = tuple(record.keys_read) if record.keys_read is not None else None
            if encode_inputs(state, keys) != recorded:
                continue
            if len({d.key for d in deltas}) != len(deltas) or any(d.overwrite for d in deltas):
                continue  # only a plain mapping survives a checkpoint of kept outputs as it is
            results[record.name] = {d.key: d.value for d in deltas}
            reads[record.name] = record.keys_read
        return results, reads

    @staticmethod
    def replay(found: SourceExec) -> tuple[list[tuple[str, Any]], Goto | End | Fallback | None]:
        """A reused execution's changes and directive."""
        return replayed_changes(found), directive_of(found.route)


def replayed_changes(found: SourceExec) -> list[tuple[str, Any]]:
    """A reused execution's recorded deltas as changes (an overwrite stays one)."""
    return [(d.key, Overwrite(d.value) if d.overwrite else d.value) for d in found.deltas]


def directive_of(route: RecordedRoute | None) -> Goto | End | Fallback | None:
    """The directive a reused execution returned, rebuilt from its record."""
    if route is None:
        return None
    if route.kind == "goto":
        assert route.target is not None
        return Goto(route.target)
    if route.kind == "end":
        return End()
    return Fallback(route.reason)
