"""What the command line reads from its arguments: graph targets, ``key=json``, durations."""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .._graph import Graph
from ._exit import EXIT_NOT_FOUND, EXIT_USAGE, CliError

__all__ = (
    "check_choice",
    "load_graph_target",
    "load_registry",
    "parse_assignments",
    "parse_duration",
    "pick",
)


def load_graph_target(target: str) -> dict[str, Graph]:
    """The graphs ``module:attr`` names, by graph name.

    ``attr`` (dotted paths allowed) may be a Graph, a list or tuple of graphs, or a mapping of
    graph name to graph. The current directory is importable, as it is for ``python -m``.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"bad graph target {target!r}: expected module:attr (e.g. app.graphs:graph)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise CliError(f"cannot import module {module_name!r} of {target!r}: {exc}") from exc
        raise CliError(f"importing {module_name!r} of {target!r} failed: {exc!r}") from exc
    except Exception as exc:
        raise CliError(f"importing {module_name!r} of {target!r} failed: {exc!r}") from exc
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CliError(
                f"{target!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return _registry_of(value, target)


def _registry_of(value: Any, target: str) -> dict[str, Graph]:
    if isinstance(value, Graph):
        return {value.name: value}
    found: dict[str, Graph] = {}
    items: Iterable[tuple[str | None, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = ((None, v) for v in value)
    else:
        raise CliError(
            f"{target!r} is a {type(value).__name__}: expected a graphexec Graph, a list of "
            "graphs, or a dict of graph name to graph"
        )
    for key, graph in items:
        if not isinstance(graph, Graph):
            raise CliError(f"{target!r} holds a {type(graph).__name__}, not a graphexec Graph")
        if key is not None and key != graph.name:
            raise CliError(
                f"{target!r} maps {key!r} to graph {graph.name!r}: runs find their graph by its "
                "name, so the keys must be the graphs' names"
            )
        if graph.name in found and found[graph.name] is not graph:
            raise CliError(f"{target!r} holds two graphs named {graph.name!r}")
        found[graph.name] = graph
    if not found:
        raise CliError(f"{target!r} holds no graphs")
    return found


def load_registry(targets: Iterable[str]) -> dict[str, Graph]:
    """Every graph of every ``--graphs`` target, by name (a name given twice is an error)."""
    registry: dict[str, Graph] = {}
    for target in targets:
        for name, graph in load_graph_target(target).items():
            if name in registry and registry[name] is not graph:
                raise CliError(f"two --graphs targets hold a graph named {name!r}")
            registry[name] = graph
    return registry


def pick(registry: Mapping[str, Graph], name: str, *, trace_id: str) -> Graph:
    """The graph a run needs, or a not-found error naming what ``--graphs`` holds."""
    graph = registry.get(name)
    if graph is None:
        held = ", ".join(sorted(registry)) or "nothing"
        raise CliError(
            f"run {trace_id!r} runs graph {name!r}, which --graphs does not provide (it holds: "
            f"{held})",
            EXIT_NOT_FOUND,
        )
    return graph


def parse_assignments(items: Iterable[str], *, option: str) -> dict[str, Any]:
    """``["key=<json>", ...]`` as a dict; the value must be JSON (strings in quotes)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"bad {option} {item!r}: expected key=<json value>")
        try:
            out[key] = msgspec.json.decode(raw.encode())
        except msgspec.DecodeError:
            raise CliError(
                f"bad {option} {item!r}: the value is not JSON (a string needs quotes: "
                f"{key}='\"text\"')"
            ) from None
    return out


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"45s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` or ``"1d12h"``."""
    spec = text.strip().lower()
    try:
        seconds = float(spec)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(spec):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(spec) or not spec:
            raise CliError(
                f"bad duration {text!r}: expected a number of seconds or e.g. 45s, 15m, 12h, 7d, "
                "2w, 1d12h"
            ) from None
    if seconds < 0 or not math.isfinite(seconds):
        raise CliError(f"bad duration {text!r}: must be a number of seconds >= 0")
    return seconds


def check_choice(value: str, allowed: Iterable[str], *, option: str) -> str:
    """``value`` if it is one of ``allowed``, else a usage error listing them."""
    choices = tuple(allowed)
    if value not in choices:
        raise CliError(f"bad {option} {value!r}: expected one of {', '.join(choices)}", EXIT_USAGE)
    return value
