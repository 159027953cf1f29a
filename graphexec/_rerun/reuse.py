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

from collections.abc import Callable
from typing import Any

import msgspec

from .._directives import End, Fallback, Goto, Overwrite
from .._graph import NodeSpec
from ..checkpoint._record import RecordedRoute
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

    def map_items(self, spec: NodeSpec) -> Callable[[Any], tuple[bool, Any]] | None:
        """For a map node that runs again (its items changed): the per-item results of the
        matching source execution, to reuse for the items it already mapped (an item's result
        depends on the item alone). None for the target, a changed fingerprint, or a source
        execution whose results do not line up with its items (some failed)."""
        name = spec.name
        if name == self.target:
            return None
        found = self.source.by_occurrence.get((name, self.counts.get(name, 0)))
        if found is None or found.fingerprint != spec.fingerprint or not found.inputs:
            return None
        items = msgspec.msgpack.decode(found.inputs)
        if len(items) != 1 or not isinstance(items[0], list):
            return None
        deltas = found.deltas
        if len(deltas) != 1 or deltas[0].key != spec.into or not isinstance(deltas[0].value, list):
            return None
        results = deltas[0].value
        if len(results) != len(items[0]):
            return None
        encode = msgspec.msgpack.encode
        table = {encode(item): result for item, result in zip(items[0], results, strict=True)}

        def known(item: Any) -> tuple[bool, Any]:
            try:
                key = encode(item)
            except (TypeError, ValueError):
                return False, None
            if key in table:
                return True, table[key]
            return False, None

        return known

    def parallel_branches(
        self, spec: NodeSpec, state: dict[str, Any]
    ) -> Callable[[str], tuple[list[tuple[str, Any]], list[str] | None] | None] | None:
        """For a parallel node that runs again: the branches of the matching source execution
        whose own fingerprint and read values are unchanged, with their recorded changes. None
        for the target or a source execution that has no branch records."""
        name = spec.name
        if name == self.target:
            return None
        found = self.source.by_occurrence.get((name, self.counts.get(name, 0)))
        if found is None or not found.branches or not found.branch_inputs:
            return None
        fingerprints = {b.name: b.fingerprint for b in spec.branches}
        table: dict[str, tuple[list[tuple[str, Any]], list[str] | None]] = {}
        start = 0
        for record, recorded_inputs in zip(found.branches, found.branch_inputs, strict=True):
            deltas = found.deltas[start : start + record.deltas]
            start += record.deltas
            if record.name not in fingerprints or fingerprints[record.name] != record.fingerprint:
                continue
            keys = tuple(record.keys_read) if record.keys_read is not None else None
            if encode_inputs(state, keys) != recorded_inputs:
                continue
            table[record.name] = (
                [(d.key, Overwrite(d.value) if d.overwrite else d.value) for d in deltas],
                record.keys_read,
            )
        return table.get

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
