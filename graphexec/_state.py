"""Applying deltas through per-key reducers, and validating typed state.

The run keeps its state as a plain dict it owns. Nodes see a :class:`~._view.StateView` of it
(read-only; list, dict and set values are handed out as copies, so mutating them in place cannot
change the run's state), or, with typed state, a fresh instance of the state Struct whose
list, dict and set fields are copies. See ``_view.py``. Every value a node writes goes through
:meth:`StateSpec.check`, which also refuses values a checkpoint would not restore as they were
(``_values.check_value``).
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin

import msgspec

from . import reducers as _reducers
from ._callables import check_reducer
from ._directives import Overwrite, StateDelta
from ._values import LEAVES, check_value
from ._view import StateView, fresh
from .exceptions import StateError

__all__ = ("StateSpec",)

_SPREAD: dict[Any, tuple[type, ...]] = {
    _reducers.append: (tuple,),
    _reducers.union: (tuple, set, frozenset),
}
"""Containers a built-in reducer spreads into items (see reducers.py), so their own type is
never stored."""


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    if get_origin(tp) is typing.Annotated:
        base, *meta = get_args(tp)
        return base, meta
    return tp, []


class _KeyCheck:
    """Validates a delta value for one typed-state key (the shape depends on its reducer)."""

    __slots__ = ("item_type", "loose", "type", "type_name", "whole_name")

    def __init__(self, tp: Any, reducer: Callable[..., Any] | None) -> None:
        self.type = tp
        # A field annotated Any converts nothing back on restore: its values follow the
        # untyped rules (no tuples, sets, ...).
        self.loose = tp is Any or tp is object
        # repr keeps the parameters of generics ("list[str]", "int | None"); classes by name.
        self.type_name = tp.__name__ if isinstance(tp, type) else repr(tp)
        self.whole_name = self.type_name
        self.item_type: Any = None
        if reducer in (_reducers.append, _reducers.union):
            args = get_args(tp)
            if args:
                self.item_type = args[0]
                item = args[0]
                item_name = item.__name__ if isinstance(item, type) else repr(item)
                self.type_name = f"{item_name} or {self.type_name}"  # one item, or several

    def __call__(self, value: Any) -> Any:
        try:
            return msgspec.convert(value, self.type)
        except msgspec.ValidationError:
            if self.item_type is None:
                raise
            return msgspec.convert(value, self.item_type)


class StateSpec:
    """How a graph's state is combined and checked: reducers, in-place twins, typed schema."""

    __slots__ = ("checks", "inplace", "reducers", "state_type")

    def __init__(
        self,
        reducers: Mapping[str, Callable[[Any, Any], Any]],
        state_type: type[msgspec.Struct] | None,
    ) -> None:
        for key, fn in reducers.items():
            check_reducer(fn, key)
        self.reducers = dict(reducers)
        self.state_type = state_type
        self.inplace = {
            k: _reducers.INPLACE[r] for k, r in self.reducers.items() if r in _reducers.INPLACE
        }
        self.checks: dict[str, _KeyCheck] | None = None
        if state_type is not None:
            hints = typing.get_type_hints(state_type, include_extras=True)
            self.checks = {}
            for f in msgspec.structs.fields(state_type):
                base, _meta = _strip_annotated(hints.get(f.name, f.type))
                self.checks[f.name] = _KeyCheck(base, self.reducers.get(f.name))

    @staticmethod
    def reducers_from_type(state_type: type[msgspec.Struct]) -> dict[str, Callable[..., Any]]:
        """Reducers declared as ``Annotated[T, reducer]`` on the Struct's fields."""
        found: dict[str, Callable[..., Any]] = {}
        hints = typing.get_type_hints(state_type, include_extras=True)
        for name, tp in hints.items():
            _base, meta = _strip_annotated(tp)
            fns = [m for m in meta if callable(m) and not isinstance(m, type)]
            if fns:
                found[name] = fns[-1]
        return found

    # -- the initial state -------------------------------------------------------------------

    def initial(self, state: Any, *, trace_id: str | None = None) -> dict[str, Any]:
        """The run's own dict from a caller's state (a mapping, or a typed-state instance)."""
        if self.state_type is not None:
            if isinstance(state, self.state_type):
                data = msgspec.structs.asdict(state)
            else:
                if isinstance(state, Mapping) and self.checks is not None:
                    unknown = [k for k in state if k not in self.checks]
                    if unknown:  # msgspec.convert would drop them silently
                        raise StateError(
                            f"initial state has unknown key {unknown[0]!r}: "
                            f"{self.state_type.__name__} has no such field",
                            key=str(unknown[0]),
                            trace_id=trace_id,
                        )
                try:
                    obj = msgspec.convert(state or {}, self.state_type)
                except msgspec.ValidationError as exc:
                    raise StateError(
                        f"initial state does not fit {self.state_type.__name__}: {exc}",
                        trace_id=trace_id,
                    ) from exc
                data = msgspec.structs.asdict(obj)
        else:
            if state is None:
                state = {}
            if not isinstance(state, Mapping):
                raise StateError(
                    f"initial state must be a mapping of str keys, got {type(state).__name__}",
                    trace_id=trace_id,
                )
            data = dict(state)
            bad = [k for k in data if not isinstance(k, str)]
            if bad:
                raise StateError(f"state keys must be str, got {bad[0]!r}", trace_id=trace_id)
        typed = self.checks is not None
        for key, value in data.items():
            loose = typed and self.checks is not None and self.checks[key].loose
            check_value(value, node=None, key=key, typed=typed and not loose)
        for key, (_fn, kind) in self.inplace.items():
            value = data.get(key)
            if type(value) is kind:
                # The run owns its copy; the caller's object is never mutated in place.
                data[key] = copy.copy(value)
        return data

    def restored(self, data: dict[str, Any]) -> dict[str, Any]:
        """A state decoded from a checkpoint: re-typed when the graph has typed state."""
        if self.state_type is None:
            return data
        return msgspec.structs.asdict(msgspec.convert(data, self.state_type))

    # -- applying deltas ---------------------------------------------------------------------

    def check_all(self, changes: list[tuple[str, Any]], node: str | None) -> list[tuple[str, Any]]:
        """Check one node's deltas (see :meth:`check`); the (converted) deltas.

        One call per node execution: for untyped state the common case (str keys, scalar
        values) is decided here without a call per delta, and the list is returned as is.
        """
        if self.checks is not None:
            return [(k, self.check(k, v, node=node)) for k, v in changes]
        for k, v in changes:
            t = type(v)
            if type(k) is not str or t not in LEAVES:
                if t is list and type(k) is str:  # a list of scalars (an append) passes here
                    for item in v:
                        if type(item) not in LEAVES:
                            break
                    else:
                        continue
                self.check(k, v, node=node)
        return changes

    def check(self, key: str, value: Any, *, node: str | None) -> Any:
        """Validate (and convert) one delta value against the typed state, if any."""
        checks = self.checks
        if checks is None:
            if type(key) is not str:
                raise StateError(f"node {node!r} wrote a non-str key {key!r}", node=node)
            # check_value's own fast path, inlined: most deltas are one small scalar, and this
            # runs for every delta of every step.
            t = type(value)
            if t not in LEAVES:
                if t is Overwrite:
                    check_value(value.value, node=node, key=key)
                elif t in _SPREAD.get(self.reducers.get(key), ()):
                    # append/union take the items of a tuple (or set) as they take a list's: the
                    # replay gets a list and produces the same state, so only the items count.
                    for item in value:
                        check_value(item, node=node, key=key)
                else:
                    check_value(value, node=node, key=key)
            return value
        if type(value) is Overwrite:  # checked as a whole value of the key, then re-wrapped
            check = checks.get(key)
            if check is not None and check.item_type is not None:
                try:
                    whole = msgspec.convert(value.value, check.type)
                    check_value(whole, node=node, key=key, typed=not check.loose)
                    return Overwrite(whole)
                except msgspec.ValidationError as exc:
                    raise StateError(
                        f"node {node!r} wrote key {key!r} with gx.Overwrite of "
                        f"{type(value.value).__name__} {value.value!r:.80}: expected "
                        f"{check.whole_name} ({exc})",
                        key=key,
                        node=node,
                    ) from exc
            return Overwrite(self.check(key, value.value, node=node))
        check = checks.get(key)
        if check is None:
            raise StateError(
                f"node {node!r} wrote unknown key {key!r}: "
                f"{self.state_type.__name__ if self.state_type else 'state'} has no such field",
                key=key,
                node=node,
            )
        try:
            converted = check(value)
        except msgspec.ValidationError as exc:
            raise StateError(
                f"node {node!r} wrote key {key!r} with {type(value).__name__} {value!r:.80}: "
                f"expected {check.type_name} ({exc})",
                key=key,
                node=node,
            ) from exc
        check_value(converted, node=node, key=key, typed=not check.loose)
        return converted

    def apply(self, state: dict[str, Any], key: str, value: Any, *, node: str | None) -> None:
        """Apply one (already checked) delta through the key's reducer, in place on ``state``."""
        if type(value) is Overwrite:
            value = value.value
            # A key updated in place must not share the node's object (later appends).
            state[key] = (
                copy.copy(value) if key in self.inplace else self._unshared(state, key, value)
            )
            return
        reducer = self.reducers.get(key)
        if reducer is None:
            state[key] = self._unshared(state, key, value)
            return
        current = state.get(key)
        twin = self.inplace.get(key)
        try:
            if twin is not None and type(current) is twin[1]:
                twin[0](current, value)
            else:
                state[key] = self._unshared(state, key, reducer(current, value))
        except StateError:
            raise
        except Exception as exc:
            raise StateError(
                f"reducer for key {key!r} failed on the value from node {node!r}: {exc!r}",
                key=key,
                node=node,
            ) from exc

    def _unshared(self, state: dict[str, Any], key: str, value: Any) -> Any:
        """``value``, copied if it is the object another key's in-place reducer updates (say a
        node returned ``{"snapshot": state["messages"]}``): later appends must not show
        through the other key."""
        if self.inplace and isinstance(value, list | dict):
            for other in self.inplace:
                if other != key and state.get(other) is value:
                    return copy.copy(value)
        return value

    # -- what nodes see ----------------------------------------------------------------------

    def view(self, state: dict[str, Any]) -> Any:
        """What a node or a condition receives."""
        state_type = self.state_type
        if state_type is None:
            return StateView(state)
        # Typed state: a fresh instance whose list/dict/set fields are copies (mutating them
        # cannot reach the run's state).
        return state_type(**{k: fresh(v) for k, v in state.items()})

    def public(self, state: dict[str, Any]) -> Any:
        """What results hold: the dict itself, or a typed-state instance."""
        state_type = self.state_type
        if state_type is None:
            return state
        return state_type(**state)


def changes_of(result: Any, *, node: str) -> list[tuple[str, Any]]:
    """Turn a node's updates into ordered (key, value) deltas.

    ``result`` is None, a mapping, or a list/tuple of :class:`StateDelta` (a key may appear more
    than once; the writes apply in order). An overwriting delta becomes ``(key, Overwrite(v))``.
    """
    if result is None:
        return []
    if type(result) is dict or isinstance(result, Mapping):
        return list(result.items())
    if isinstance(result, list | tuple):
        out: list[tuple[str, Any]] = []
        for item in result:
            if type(item) is not StateDelta:
                raise StateError(
                    f"node {node!r} returned a {type(result).__name__} holding "
                    f"{type(item).__name__}; a sequence of updates holds only gx.StateDelta",
                    node=node,
                )
            out.append((item.key, Overwrite(item.value) if item.overwrite else item.value))
        return out
    raise StateError(
        f"node {node!r} returned {type(result).__name__}; a node returns None, a mapping of "
        "state updates, a list of gx.StateDelta, gx.Goto, gx.End or gx.Fallback",
        node=node,
    )
