"""Reducers: the built-ins as plain functions (with properties), and through the executor."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphexec as gx
from graphexec import reducers

json_scalars = st.none() | st.booleans() | st.integers() | st.text("abxyz", max_size=5)
json_values = (
    json_scalars
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text("abxyz", max_size=3), json_scalars, max_size=3)
)
#: The properties are cheap; fewer examples keep this file fast.
quick = settings(max_examples=50, deadline=None)
numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)


class TestOverwrite:
    """overwrite: the default."""

    def test_replaces(self) -> None:
        """The new value replaces the current one, whatever it is."""
        assert 2 == reducers.overwrite(1, 2)
        assert [3] == reducers.overwrite([1, 2], [3])
        assert None is reducers.overwrite("x", None)

    def test_missing_key(self) -> None:
        """A missing key (current None) takes the value."""
        assert "v" == reducers.overwrite(None, "v")


class TestAppend:
    """append: lists; a list or tuple extends, anything else is one item."""

    def test_single_item(self) -> None:
        """A non-sequence value is appended as one item."""
        assert [1, 2] == reducers.append([1], 2)

    def test_list_extends(self) -> None:
        """A list value extends the current list."""
        assert [1, 2, 3] == reducers.append([1], [2, 3])

    def test_tuple_extends(self) -> None:
        """A tuple value extends too."""
        assert [1, 2, 3] == reducers.append([1], (2, 3))

    def test_missing_key(self) -> None:
        """A missing key starts an empty list."""
        assert ["a"] == reducers.append(None, "a")
        assert ["a", "b"] == reducers.append(None, ["a", "b"])

    def test_strings_and_dicts_are_items(self) -> None:
        """A str or a dict is one item, not a sequence to spread."""
        assert ["ab", {"k": 1}] == reducers.append(["ab"], {"k": 1})
        assert ["xy"] == reducers.append([], "xy")

    def test_nested_list_item(self) -> None:
        """To append a list as one item, wrap it in a list."""
        assert [0, [1, 2]] == reducers.append([0], [[1, 2]])

    def test_current_tuple_becomes_list(self) -> None:
        """A tuple current value comes back as a list."""
        assert [1, 2] == reducers.append((1,), 2)

    @quick
    @given(st.lists(json_values, max_size=6), st.lists(json_values, max_size=6))
    def test_list_is_concatenation(self, current: list[Any], value: list[Any]) -> None:
        """Appending a list is list concatenation."""
        assert current + value == reducers.append(current, value)

    @quick
    @given(st.lists(json_values, max_size=6), json_values.filter(lambda v: not isinstance(v, list)))
    def test_item_is_one_more(self, current: list[Any], value: Any) -> None:
        """Appending a non-list value adds exactly one item at the end."""
        assert [*current, value] == reducers.append(current, value)


class TestMerge:
    """merge: shallow dict update."""

    def test_updates(self) -> None:
        """Keys of the value are added or replaced; others are kept."""
        assert {"a": 1, "b": 3, "c": 4} == reducers.merge({"a": 1, "b": 2}, {"b": 3, "c": 4})

    def test_shallow(self) -> None:
        """Nested dicts are replaced, not merged."""
        assert {"a": {"y": 2}} == reducers.merge({"a": {"x": 1}}, {"a": {"y": 2}})

    def test_missing_key(self) -> None:
        """A missing key starts an empty dict."""
        assert {"a": 1} == reducers.merge(None, {"a": 1})

    @pytest.mark.parametrize("value", [[("a", 1)], "ab", 3, None])
    def test_rejects_non_mapping(self, value: Any) -> None:
        """A value that is not a mapping is a TypeError naming its type."""
        with pytest.raises(TypeError, match=f"merge expects a mapping, got {type(value).__name__}"):
            reducers.merge({}, value)

    @quick
    @given(
        st.dictionaries(st.text("abxyz", max_size=3), json_values, max_size=5),
        st.dictionaries(st.text("abxyz", max_size=3), json_values, max_size=5),
    )
    def test_is_dict_update(self, current: dict[str, Any], value: dict[str, Any]) -> None:
        """merge(current, value) equals dict(current) updated with value."""
        expected = dict(current)
        expected.update(value)
        assert expected == reducers.merge(current, value)


class TestAdd:
    """add: numbers."""

    def test_adds(self) -> None:
        """Integers and floats add."""
        assert 5 == reducers.add(2, 3)
        assert 3.5 == reducers.add(1.5, 2)

    def test_missing_key(self) -> None:
        """A missing key counts as 0."""
        assert 7 == reducers.add(None, 7)

    @pytest.mark.parametrize("value", ["1", None, [1], True, False])
    def test_rejects_non_numbers_and_bools(self, value: Any) -> None:
        """Strings, None, lists and bools are refused with a TypeError naming the type."""
        with pytest.raises(TypeError, match=f"add expects a number, got {type(value).__name__}"):
            reducers.add(1, value)

    @quick
    @given(st.integers(), st.integers(), st.integers())
    def test_associative_on_ints(self, a: int, b: int, c: int) -> None:
        """Adding b then c equals adding b + c."""
        assert reducers.add(reducers.add(a, b), c) == reducers.add(a, reducers.add(b, c))

    @quick
    @given(st.lists(st.integers()))
    def test_fold_is_sum(self, values: list[int]) -> None:
        """Folding deltas from a missing key gives their sum."""
        total: int | float | None = None
        for v in values:
            total = reducers.add(total, v)
        assert sum(values) == (total or 0)


class TestUnion:
    """union: sets kept as sorted lists."""

    def test_union_sorted(self) -> None:
        """Items of both, sorted, without duplicates."""
        assert [1, 2, 3, 4] == reducers.union([3, 1], [4, 3, 2])

    def test_single_item(self) -> None:
        """A non-collection value is one item."""
        assert ["a", "b"] == reducers.union(["b"], "a")
        assert ["b"] == reducers.union(["b"], "b")

    def test_sets_and_tuples(self) -> None:
        """Sets, frozensets and tuples are collections of items."""
        assert [1, 2, 3] == reducers.union({2}, frozenset({1, 3}))
        assert [1, 2] == reducers.union(None, (2, 1, 2))

    def test_missing_key(self) -> None:
        """A missing key starts empty."""
        assert [5] == reducers.union(None, 5)

    @quick
    @given(st.lists(st.integers()), st.lists(st.integers()))
    def test_sorted_and_deduplicated(self, current: list[int], value: list[int]) -> None:
        """The result is the sorted set union of both."""
        result = reducers.union(current, value)
        assert sorted(set(current) | set(value)) == result
        assert result == sorted(result)
        assert len(set(result)) == len(result)

    @quick
    @given(st.lists(st.integers()), st.lists(st.integers()))
    def test_idempotent(self, current: list[int], value: list[int]) -> None:
        """Applying the same value twice changes nothing more."""
        once = reducers.union(current, value)
        assert once == reducers.union(once, value)


class TestPurity:
    """The built-in reducers never mutate what they are given."""

    @quick
    @given(st.lists(json_values, max_size=6), json_values)
    def test_append_pure(self, current: list[Any], value: Any) -> None:
        """append leaves its current list and its value untouched."""
        before = copy.deepcopy((current, value))
        result = reducers.append(current, value)
        assert before == (current, value)
        assert result is not current

    @quick
    @given(
        st.dictionaries(st.text("abxyz", max_size=3), json_values, max_size=5),
        st.dictionaries(st.text("abxyz", max_size=3), json_values, max_size=5),
    )
    def test_merge_pure(self, current: dict[str, Any], value: dict[str, Any]) -> None:
        """merge leaves both dicts untouched."""
        before = copy.deepcopy((current, value))
        result = reducers.merge(current, value)
        assert before == (current, value)
        assert result is not current

    @quick
    @given(st.lists(st.integers()), st.lists(st.integers()) | st.integers())
    def test_union_pure(self, current: list[int], value: Any) -> None:
        """union leaves its inputs untouched."""
        before = copy.deepcopy((current, value))
        result = reducers.union(current, value)
        assert before == (current, value)
        assert result is not current

    @quick
    @given(json_values, json_values)
    def test_overwrite_pure(self, current: Any, value: Any) -> None:
        """overwrite returns the value itself and touches nothing."""
        before = copy.deepcopy((current, value))
        assert value is reducers.overwrite(current, value)
        assert before == (current, value)

    @quick
    @given(numbers, numbers)
    def test_add_pure(self, current: float, value: float) -> None:
        """add is plain arithmetic."""
        assert current + value == reducers.add(current, value)


# -- through the executor ------------------------------------------------------------------


def keep_max(current: int | None, value: int) -> int:
    """A custom reducer: the largest value seen."""
    return value if current is None else max(current, value)


class TestReducersInRuns:
    """Reducers as the executor applies them."""

    async def test_custom_reducer(self) -> None:
        """A custom reducer combines every delta for its key, in order."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", lambda state: {"best": 3, "last": 3})
            .node("b", lambda state: {"best": 9, "last": 9})
            .node("c", lambda state: {"best": 5, "last": 5})
            .edge("a", "b")
            .edge("b", "c")
            .reducer("best", keep_max)
            .start("a")
            .end("c")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph, {"best": 4})
        assert {"best": 9, "last": 5} == result.state

    async def test_builtin_reducers_in_a_run(self) -> None:
        """append, merge, add and union fold the deltas of successive nodes."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", lambda s: {"log": "a", "meta": {"x": 1}, "n": 1, "tags": ["b", "a"]})
            .node("b", lambda s: {"log": ["b1", "b2"], "meta": {"y": 2}, "n": 2, "tags": "c"})
            .edge("a", "b")
            .reducer("log", gx.reducers.append)
            .reducer("meta", gx.reducers.merge)
            .reducer("n", gx.reducers.add)
            .reducer("tags", gx.reducers.union)
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert {
            "log": ["a", "b1", "b2"],
            "meta": {"x": 1, "y": 2},
            "n": 3,
            "tags": ["a", "b", "c"],
        } == result.state

    async def test_in_place_never_mutates_callers_state(self) -> None:
        """The caller's initial list and dict are left as they were, run after run."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", lambda state: {"items": "a", "meta": {"a": 1}})
            .node("b", lambda state: {"items": ["b", "c"], "meta": {"b": 2}})
            .edge("a", "b")
            .reducer("items", gx.reducers.append)
            .reducer("meta", gx.reducers.merge)
            .start("a")
            .end("b")
            .build()
        )
        items = ["start"]
        meta = {"start": 0}
        initial = {"items": items, "meta": meta}
        ex = gx.GraphExecutor()

        first = await ex.execute(graph, initial)
        second = await ex.execute(graph, initial)

        assert ["start"] == items
        assert {"start": 0} == meta
        assert {"items": items, "meta": meta} == initial
        assert initial["items"] is items
        expected = {"items": ["start", "a", "b", "c"], "meta": {"start": 0, "a": 1, "b": 2}}
        assert expected == first.state
        assert expected == second.state
        assert first.state["items"] is not second.state["items"]

    async def test_in_place_does_not_mutate_node_values(self) -> None:
        """A list a node returned for an append key is not mutated by later appends."""
        returned = ["x"]
        graph = (
            gx.GraphBuilder("g")
            .node("a", lambda state: {"items": returned})
            .node("b", lambda state: {"items": "y"})
            .edge("a", "b")
            .reducer("items", gx.reducers.append)
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ["x"] == returned
        assert ["x", "y"] == result.state["items"]

    async def test_in_place_does_not_leak_into_aliases(self) -> None:
        """A node copying an appended list to another key keeps a snapshot, not an alias."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", lambda state: {"snapshot": state["items"]})
            .node("b", lambda state: {"items": "later"})
            .edge("a", "b")
            .reducer("items", gx.reducers.append)
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph, {"items": ["first"]})
        assert {"items": ["first", "later"], "snapshot": ["first"]} == result.state

    async def test_reducer_error_names_key_and_node(self) -> None:
        """A reducer that raises becomes a StateError naming the key and the node."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", lambda state: {"total": 1})
            .node("b", lambda state: {"total": "lots"})
            .edge("a", "b")
            .reducer("total", gx.reducers.add)
            .start("a")
            .end("b")
            .build()
        )
        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(graph)
        exc = info.value
        assert "total" == exc.key
        assert "b" == exc.node
        assert 2 == exc.step
        assert "reducer for key 'total' failed on the value from node 'b'" in str(exc)
        assert "add expects a number, got str" in str(exc)
        assert isinstance(exc.__cause__, TypeError)

    async def test_custom_reducer_error(self) -> None:
        """A custom reducer's exception is wrapped the same way."""

        def picky(current: Any, value: Any) -> Any:
            raise ValueError("no thanks")

        graph = (
            gx.GraphBuilder("g")
            .node("only", lambda state: {"k": 1})
            .reducer("k", picky)
            .start("only")
            .end("only")
            .build()
        )
        with pytest.raises(gx.StateError, match="reducer for key 'k' failed.*'only'") as info:
            await gx.GraphExecutor().execute(graph)
        assert ("k", "only") == (info.value.key, info.value.node)
