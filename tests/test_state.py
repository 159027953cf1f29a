"""State: the read-only view nodes get, initial state checks, and typed state (msgspec.Struct)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Annotated, Any

import msgspec
import pytest

import graphexec as gx


def returns(update: Any) -> Callable[[Any], Any]:
    """A node returning ``update``."""

    def node(state: Any) -> Any:
        return update

    return node


def one_node(fn: Callable[..., Any], *, state: type[msgspec.Struct] | None = None) -> gx.Graph:
    """A graph of the single node ``a``."""
    return gx.GraphBuilder("g", state=state).node("a", fn).start("a").end("a").build()


class TestUntypedState:
    """State as a mapping of str keys."""

    async def test_nodes_get_a_read_only_mapping(self) -> None:
        """A node sees a Mapping it cannot change: assignment and deletion raise TypeError."""
        seen: dict[str, Any] = {}

        def assign(state: Any) -> None:
            state["k"] = 2

        def delete(state: Any) -> None:
            del state["k"]

        def a(state: Mapping[str, Any]) -> dict[str, Any]:
            seen["mapping"] = isinstance(state, Mapping)
            seen["mutable"] = isinstance(state, MutableMapping)
            seen["value"] = state["k"]
            for attempt in (assign, delete):
                try:
                    attempt(state)
                except TypeError:
                    seen["raised"] = seen.get("raised", 0) + 1
            return {"k": 3}

        result = await gx.GraphExecutor().execute(one_node(a), {"k": 1})
        assert {"mapping": True, "mutable": False, "value": 1, "raised": 2} == seen
        assert {"k": 3} == result.state

    async def test_assignment_in_a_node_fails_the_node(self) -> None:
        """A node that assigns to its state fails with NodeExecutionFailed caused by TypeError."""

        def a(state: Any) -> None:
            state["k"] = 2

        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(one_node(a), {"k": 1})
        assert isinstance(info.value.cause, TypeError)
        assert "a" == info.value.node

    async def test_callers_dict_is_not_the_run_state(self) -> None:
        """The caller's initial dict is left unchanged by the run."""
        initial = {"k": 1}
        result = await gx.GraphExecutor().execute(one_node(returns({"k": 2, "new": True})), initial)
        assert {"k": 1} == initial
        assert {"k": 2, "new": True} == result.state

    async def test_no_initial_state(self) -> None:
        """No initial state (None) starts empty."""
        result = await gx.GraphExecutor().execute(one_node(returns({"k": 1})))
        assert {"k": 1} == result.state

    @pytest.mark.parametrize(
        ("state", "type_name"),
        [([("k", 1)], "list"), ("text", "str"), (42, "int"), (("k", 1), "tuple")],
    )
    async def test_non_mapping_initial_state(self, state: Any, type_name: str) -> None:
        """A non-mapping initial state is StateError naming its type."""
        with pytest.raises(gx.StateError, match=f"initial state must be a mapping.*{type_name}"):
            await gx.GraphExecutor().execute(one_node(returns(None)), state)

    async def test_non_str_key_in_initial_state(self) -> None:
        """An initial state with a non-str key is StateError naming the key."""
        with pytest.raises(gx.StateError, match="state keys must be str, got 1"):
            await gx.GraphExecutor().execute(one_node(returns(None)), {1: "one"})


class Chat(msgspec.Struct):
    """A typed state."""

    question: str = ""
    count: int = 0
    log: Annotated[list[str], gx.reducers.append] = []
    tags: list[str] = []
    score: float | None = None


class Needs(msgspec.Struct):
    """A typed state with a required field."""

    ticket: str
    count: int = 0


class TestTypedState:
    """GraphBuilder(name, state=SomeStruct)."""

    async def test_nodes_receive_an_instance(self) -> None:
        """Every node receives an instance of the Struct, with the current values."""
        seen: list[Any] = []
        types: list[type] = []

        def a(state: Chat) -> dict[str, Any]:
            types.append(type(state))
            seen.append(msgspec.structs.replace(state, log=list(state.log)))
            return {"count": state.count + 1, "log": "a"}

        def b(state: Chat) -> dict[str, Any]:
            types.append(type(state))
            seen.append(msgspec.structs.replace(state, log=list(state.log)))
            return {"count": state.count + 1, "log": "b"}

        graph = (
            gx.GraphBuilder("typed", state=Chat)
            .node("a", a)
            .node("b", b)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        await gx.GraphExecutor().execute(graph, Chat(question="q"))
        assert [Chat(question="q"), Chat(question="q", count=1, log=["a"])] == seen
        assert [Chat, Chat] == types

    async def test_result_state_is_an_instance(self) -> None:
        """result.state is an instance of the Struct."""
        graph = one_node(returns({"count": 5, "log": "x"}), state=Chat)
        result = await gx.GraphExecutor().execute(graph, {"question": "q"})
        assert type(result.state) is Chat
        assert Chat(question="q", count=5, log=["x"]) == result.state

    async def test_conditions_receive_an_instance(self) -> None:
        """Edge conditions see the Struct too."""
        graph = (
            gx.GraphBuilder("typed", state=Chat)
            .node("a", returns({"count": 2}))
            .node("even", returns({"log": "even"}))
            .node("odd", returns({"log": "odd"}))
            .edge("a", "even", when=lambda s: s.count % 2 == 0)
            .edge("a", "odd")
            .start("a")
            .end("even", "odd")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ["even"] == result.state.log

    async def test_wrong_delta_type(self) -> None:
        """A delta of the wrong type is StateError naming the node, the key and the type."""
        graph = one_node(returns({"count": "many"}), state=Chat)
        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(graph)
        exc = info.value
        assert ("count", "a", 1) == (exc.key, exc.node, exc.step)
        assert str(exc).startswith("node 'a' wrote key 'count' with str 'many': expected int")

    async def test_wrong_generic_delta_type(self) -> None:
        """The expected type keeps its parameters (list[str]), and the bad item is located."""
        graph = one_node(returns({"tags": ["ok", 3]}), state=Chat)
        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(graph)
        message = str(info.value)
        assert "node 'a' wrote key 'tags' with list ['ok', 3]: expected list[str]" in message
        assert "$[1]" in message

    async def test_optional_field(self) -> None:
        """An optional field takes None or its type, and names both when wrong."""
        ok = await gx.GraphExecutor().execute(one_node(returns({"score": 0.5}), state=Chat))
        assert 0.5 == ok.state.score
        with pytest.raises(gx.StateError, match=r"expected float \| None"):
            await gx.GraphExecutor().execute(one_node(returns({"score": "high"}), state=Chat))

    async def test_delta_values_are_converted(self) -> None:
        """A value msgspec can convert losslessly (int for float) is accepted."""
        result = await gx.GraphExecutor().execute(one_node(returns({"score": 1}), state=Chat))
        assert 1.0 == result.state.score

    async def test_unknown_key(self) -> None:
        """A delta for a key the Struct does not have is StateError naming node and key."""
        graph = one_node(returns({"nope": 1}), state=Chat)
        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(graph)
        assert ("nope", "a") == (info.value.key, info.value.node)
        assert "node 'a' wrote unknown key 'nope': Chat has no such field" in str(info.value)

    async def test_no_delta_applied_when_one_is_bad(self) -> None:
        """Deltas of one node are all validated before any is applied."""
        graph = (
            gx.GraphBuilder("g", state=Chat)
            .node("a", returns({"count": 1, "log": "x", "tags": "not a list"}))
            .start("a")
            .end("a")
            .build()
        )
        async with gx.GraphExecutor().execute_stream(graph) as run:
            events = [e async for e in run]
        assert "failed" == run.result.status
        assert Chat() == run.result.state
        assert [] == [e for e in events if isinstance(e, gx.StateChanged)]

    @pytest.mark.parametrize(
        ("initial", "message"),
        [
            ({"count": "x"}, "initial state does not fit Chat: Expected `int`, got `str`"),
            ({"cuont": 1}, "initial state has unknown key 'cuont': Chat has no such field"),
            ([1, 2], "initial state does not fit Chat"),
        ],
        ids=["wrong-type", "unknown-key", "not-a-mapping"],
    )
    async def test_initial_dict_is_validated(self, initial: Any, message: str) -> None:
        """An initial state given as a dict is checked against the Struct before anything runs."""
        ran: list[bool] = []
        graph = one_node(lambda state: ran.append(True), state=Chat)
        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(graph, initial)
        assert str(info.value).startswith(message)
        assert [] == ran

    async def test_initial_required_field(self) -> None:
        """A required field missing from the initial dict is StateError naming it."""
        graph = one_node(returns(None), state=Needs)
        with pytest.raises(gx.StateError, match="ticket"):
            await gx.GraphExecutor().execute(graph, {})
        result = await gx.GraphExecutor().execute(graph, {"ticket": "T-1"})
        assert Needs(ticket="T-1") == result.state

    async def test_initial_dict_and_instance_agree(self) -> None:
        """A dict initial state is converted to the same state as the equivalent instance."""
        graph = one_node(returns({"log": "a"}), state=Chat)
        ex = gx.GraphExecutor()
        from_dict = await ex.execute(graph, {"question": "q", "tags": ["t"]})
        from_obj = await ex.execute(graph, Chat(question="q", tags=["t"]))
        assert from_dict.state == from_obj.state

    async def test_append_takes_an_item_or_a_list(self) -> None:
        """An append-reduced field takes one item or a list of items; a wrong item is refused."""
        graph = (
            gx.GraphBuilder("g", state=Chat)
            .node("one", returns({"log": "a"}))
            .node("many", returns({"log": ["b", "c"]}))
            .edge("one", "many")
            .start("one")
            .end("many")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph, Chat(log=["start"]))
        assert ["start", "a", "b", "c"] == result.state.log

        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(one_node(returns({"log": 5}), state=Chat))
        assert "node 'a' wrote key 'log' with int 5: expected str or list[str]" in str(info.value)

    async def test_callers_instance_is_not_mutated(self) -> None:
        """Appending to a typed state's list leaves the caller's instance as it was."""
        initial = Chat(log=["start"])
        graph = one_node(returns({"log": ["more"], "count": 1}), state=Chat)
        result = await gx.GraphExecutor().execute(graph, initial)
        assert Chat(log=["start"]) == initial
        assert Chat(log=["start", "more"], count=1) == result.state

    async def test_reducer_from_builder_on_typed_state(self) -> None:
        """A reducer declared with .reducer() works on a typed field too."""
        graph = (
            gx.GraphBuilder("g", state=Chat)
            .node("a", returns({"count": 2}))
            .node("b", returns({"count": 3}))
            .edge("a", "b")
            .reducer("count", gx.reducers.add)
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph, {"count": 1})
        assert 6 == result.state.count
