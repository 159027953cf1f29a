"""Node fingerprints: what changes them (code, closures, config, deps) and what does not
(comments, docstrings, formatting, the process, the hash seed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import graphexec as gx

BASE = '''
PROMPT = "summarise"

def helper(x):
    return x * 2

def make(factor):
    async def node(state):
        """Doubles the count."""
        # scale the count
        return {"n": helper(state["n"]) * factor, "p": PROMPT}
    return node

def build(factor=1, deps=()):
    import graphexec as gx
    return (
        gx.GraphBuilder("fp", fingerprint="auto")
        .node("a", make(factor), deps=list(deps))
        .node("b", lambda s: {"m": {1, 2, 3}}, inline=True)
        .edge("a", "b")
        .start("a")
        .end("b")
        .build()
    )
'''


def _load(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fps(module: ModuleType, **kw: Any) -> dict[str, str | None]:
    graph: gx.Graph = module.build(**kw)
    return {n: s.fingerprint for n, s in graph.nodes.items()}


def test_comment_docstring_and_formatting_edits_keep_the_fingerprint(tmp_path: Path) -> None:
    """An edit that only touches comments, docstrings or layout changes nothing."""
    edited = (
        BASE.replace("# scale the count", "# multiply, then scale\n        # (twice)")
        .replace('"""Doubles the count."""', '"""Scales the count by the factor."""')
        .replace(
            'return {"n": helper(state["n"]) * factor, "p": PROMPT}',
            "return {\n"
            '            "n": helper(state["n"])  *  factor,\n            "p": PROMPT,\n        }',
        )
    )
    assert edited != BASE
    before = _fps(_load(tmp_path, "fp_v1", BASE))
    after = _fps(_load(tmp_path, "fp_v2", "\n\n" + edited))  # line numbers move too
    assert before == after
    assert before["a"] is not None and before["b"] is not None


def test_a_code_edit_changes_the_fingerprint_of_that_node_only(tmp_path: Path) -> None:
    """Changing what a node computes changes its fingerprint; its neighbours keep theirs."""
    before = _fps(_load(tmp_path, "fp_c1", BASE))
    after = _fps(_load(tmp_path, "fp_c2", BASE.replace("* factor", "+ factor")))
    assert before["a"] != after["a"]
    assert before["b"] == after["b"]


def test_closure_values_globals_and_deps_count(tmp_path: Path) -> None:
    """A captured value, a module constant the node names, and a listed helper all count."""
    module = _load(tmp_path, "fp_d1", BASE)
    base = _fps(module)["a"]
    assert _fps(module, factor=2)["a"] != base
    assert _fps(module, factor=1)["a"] == base
    constant = _load(tmp_path, "fp_d2", BASE.replace('"summarise"', '"translate"'))
    assert _fps(constant)["a"] != base
    helper_v2 = _load(tmp_path, "fp_d3", BASE.replace("x * 2", "x * 3"))
    # helper() is not listed: a change inside it goes unseen ...
    assert _fps(helper_v2)["a"] == base
    # ... unless it is listed in deps=.
    assert _fps(module, deps=[module.helper])["a"] != _fps(helper_v2, deps=[helper_v2.helper])["a"]


def test_config_counts() -> None:
    """The same function declared with other options gets another fingerprint."""

    async def node(state: Any) -> None:
        return None

    def fp(**kw: Any) -> str | None:
        graph = gx.GraphBuilder("c").node("a", node, fingerprint="auto", **kw).start("a").end("a")
        return graph.build().nodes["a"].fingerprint

    assert fp() == fp()
    assert fp() != fp(side_effects=True)


def test_explicit_versions_and_callables_and_the_builder_default() -> None:
    """A str is the fingerprint; a callable is called at build(); no option: no fingerprint."""

    async def node(state: Any) -> None:
        return None

    graph = (
        gx.GraphBuilder("v")
        .node("a", node, fingerprint="model-v3")
        .node("b", node, fingerprint=lambda: "prompt-7")
        .node("c", node)
        .edge("a", "b")
        .edge("b", "c")
        .start("a")
        .end("c")
        .build()
    )
    assert [graph.nodes[n].fingerprint for n in "abc"] == ["model-v3", "prompt-7", None]
    on = gx.GraphBuilder("v", fingerprint="auto").node("a", node).node("b", node, fingerprint=None)
    built = on.edge("a", "b").start("a").end("b").build()
    assert built.nodes["a"].fingerprint is not None
    assert built.nodes["b"].fingerprint is None


def test_bad_fingerprint_options_are_build_errors() -> None:
    """A callable returning a non-str, deps without auto, or a node without source: named."""

    async def node(state: Any) -> None:
        return None

    with pytest.raises(gx.InvalidGraph, match="node 'a'.*must return a non-empty str"):
        gx.GraphBuilder("x").node("a", node, fingerprint=lambda: 3).start("a").end("a").build()  # type: ignore[arg-type]
    with pytest.raises(gx.InvalidGraph, match="node 'a'.*deps= only counts"):
        gx.GraphBuilder("x").node("a", node, deps=[len]).start("a").end("a").build()
    with pytest.raises(gx.InvalidGraph, match="node 'a'.*needs Python source"):
        gx.GraphBuilder("x").node("a", print, fingerprint="auto").start("a").end("a").build()


def test_auto_fingerprints_are_the_same_in_other_processes_and_hash_seeds(tmp_path: Path) -> None:
    """A fresh interpreter with another PYTHONHASHSEED computes the same fingerprints (the
    lambda's closure-free set literal and a set in a closure included)."""
    source = BASE + textwrap.dedent("""
        def with_set():
            import graphexec as gx
            tags = {"alpha", "beta", "gamma", "delta"}
            async def node(state):
                return {"t": sorted(tags)}
            g = gx.GraphBuilder("s", fingerprint="auto").node("a", node).start("a").end("a")
            return g.build().nodes["a"].fingerprint

        if __name__ == "__main__":
            print(build().nodes["a"].fingerprint, build().nodes["b"].fingerprint, with_set())
    """)
    path = tmp_path / "fp_proc.py"
    path.write_text(source)
    outputs = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, str(path)], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1
    module = _load(tmp_path, "fp_proc", source)
    assert outputs == {
        f"{_fps(module)['a']} {_fps(module)['b']} {module.with_set()}",
    }
