"""What the command line parses from its arguments: durations, key=json, graph targets."""

from __future__ import annotations

from typing import Any

import pytest

from graphexec.cli._exit import EXIT_NOT_FOUND, EXIT_USAGE, CliError
from graphexec.cli._inputs import load_registry, parse_assignments, parse_duration, pick
from graphexec.cli._output import plain


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        ("45s", 45.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1d12h", 129600.0),
        ("1h30m15s", 5415.0),
        (" 3D ", 259200.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    """Seconds, or numbers with s/m/h/d/w units, summed."""
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["", "soon", "5x", "1d 2h", "h", "-5", "inf", "nan", "5s5"])
def test_bad_durations(text: str) -> None:
    """Anything else is a usage error naming the text."""
    with pytest.raises(CliError) as exc:
        parse_duration(text)
    assert EXIT_USAGE == exc.value.code
    assert repr(text) in exc.value.message


def test_assignments_are_json() -> None:
    """key=<json> pairs, values decoded as JSON; '=' inside the value is kept."""
    assert {"n": 3, "note": "a=b", "tags": ["x"], "off": None} == parse_assignments(
        ["n=3", 'note="a=b"', 'tags=["x"]', "off=null"], option="--set"
    )


@pytest.mark.parametrize("item", ["n", "=3", "note=hello", "n="])
def test_bad_assignments(item: str) -> None:
    """A missing key or '=', or a value that is not JSON, is a usage error."""
    with pytest.raises(CliError) as exc:
        parse_assignments([item], option="--set")
    assert EXIT_USAGE == exc.value.code


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("nocolon", "module:attr"),
        ("graphexec:nothing_here", "no attribute"),
        ("graphexec:__version__", "str"),
        ("graphexec_no_such_module_x:g", "cannot import"),
    ],
)
def test_bad_graph_targets(target: str, words: str) -> None:
    """Targets that do not name graphs are usage errors saying why."""
    with pytest.raises(CliError) as exc:
        load_registry([target])
    assert EXIT_USAGE == exc.value.code
    assert words in exc.value.message


def test_pick_names_what_is_there() -> None:
    """A graph missing from the registry is not found, and the message lists the registry."""
    with pytest.raises(CliError) as exc:
        pick({}, "support", trace_id="t")
    assert EXIT_NOT_FOUND == exc.value.code
    assert "'support'" in exc.value.message


def test_plain_turns_array_records_into_objects() -> None:
    """Structs stored as arrays come out as objects; tagged ones carry their tag first."""
    import graphexec as gx
    from graphexec.checkpoint._record import PendingBarrier

    pending: Any = plain(PendingBarrier(barrier_id="a#1", node="a", prompt={"q": 1}))
    assert {"barrier_id": "a#1", "node": "a", "prompt": {"q": 1}, "deadline": None} == pending
    assert {"type": "reject", "reason": "no"} == plain(gx.Reject("no"))
    assert [{"type": "approve"}] == plain([gx.Approve()])


def test_event_lines_for_resilience_events() -> None:
    """Retries, breaker changes and invalidations each print one line naming the node."""
    import graphexec as gx
    from graphexec.cli._output import describe_event

    error = gx.ErrorInfo(type="TimeoutError", message="slow")
    retry = gx.NodeRetry(
        trace_id="t", step=2, node="call", span_id="call@2", attempt=1, error=error, wait=0.5
    )
    assert describe_event(retry).endswith(
        "call attempt 1 failed (TimeoutError: slow); again in 0.50 s"
    )
    breaker = gx.CircuitChanged(trace_id="t", step=2, node="call", state="open", failures=5)
    assert describe_event(breaker).endswith("call: open after 5 failures")
    changed = gx.NodeInvalidated(
        trace_id="t",
        step=2,
        node="call",
        span_id="call@2",
        old_fingerprint="a",
        new_fingerprint="b",
    )
    assert describe_event(changed).endswith("call: fingerprint a -> b")
