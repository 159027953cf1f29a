"""The code the documentation shows runs: every docs/snippets script, in a fresh directory.

Pages include sections of these scripts (``--8<-- "docs/snippets/NAME.py:section"``); each
script asserts what it demonstrates, and the tests below check what it prints, the part the
pages quote as output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SNIPPETS = ROOT / "docs" / "snippets"
INCLUDE = re.compile(r'--8<-- "docs/snippets/([\w.]+\.py)(?::(\w+))?"')

# What each script must print (lines, in order, among its output; log lines may come between).
EXPECTED: dict[str, list[str]] = {
    "retry_flaky_model.py": [
        "completed answer to 'What is 2 + 2?'",
        "ask_model gave up after 4 attempts: model API answered 503",
        "ask_model failed at once: model refused the prompt: model API answered 400",
    ],
    "rerun_after_prompt_fix.py": [
        "retrieve@1: reuse ",
        "draft@2: run target, fingerprint_changed ",
        "publish@3: run downstream_of draft@2 (draft)",
        "completed 1 reused: WRITE ABOUT OTTERS, CITING 1 SOURCES.",
        "post-1b is a re-run of post-1",
        "WRITE ABOUT SEA OTTERS, CITING 1 SOURCES.",
    ],
    "trace_with_otel.py": [
        "graphexec.node draft               ok",
        "graphexec.run refund       start   waiting",
        "graphexec.run refund       resume  completed",
        "traces: {'",
    ],
    "failure_strategies.py": [
        "completed {'notify': {'type': 'OSError', 'message': 'mail server unreachable'}}",
        "charge failed; ran: ['reserve', 'charge', 'release']",
        "ship#1 {'error': {'type': 'RuntimeError', 'message': 'warehouse API down'},",
        "completed {'shipped': True}",
        "breaker open after 2 failures",
        "failed CircuitOpen",
    ],
    "chat_per_request.py": [
        "11 frames, the last: BarrierWaiting",
        "card: {'barrier_id': 'approve#1', 'question': 'Refund A-17 ?'}",
        "GraphComplete True",
    ],
    "conversations.py": [
        "1 ['hi', \"bot: you said 'hi' (1 messages so far)\"]",
        "turn 3 waits at approve#3",
        "RunExists: waiting",
    ],
    "wire_format.py": ['{"type":"approve"}', '{"type":"skip"}', "RunState: {", "GraphResult: {"],
    "run_manager.py": [
        "4294967301 Custom order",
        "(the page reconnects with Last-Event-ID: 4294967301)",
        "4294967302 Custom A-17",
        "4294967308 BarrierWaiting",
        "4294967317 GraphComplete",
        "completed A-17",
    ],
    "recover_after_crash.py": [
        "crawl-1 running next: summarize",
        "ran fetch at step 1",
        "ran summarize at step 2",
        "completed 1 page(s)",
    ],
    "resume_after_crash.py": [
        "crawl-1 running next: summarize",
        "running summarize at step 2",
        "completed 1 page(s)",
    ],
    "workers.py": [
        "[('r-1', 'queued'), ('r-2', 'queued'), ('r-3', 'queued')]",
        "r-2 waits at approve#1 {'amount': 450}",
        "running now: []",
        "WorkerStats(claimed=4, completed=3,",
        "{'r-1': 20, 'r-2': 450, 'r-3': 35}",
    ],
    "values_and_damage.py": [
        "node 'locate' wrote key 'point' with a value of type tuple ((3, 4)):",
        "trace id 'conv\\x0042' contains a NUL character",
        "checkpoint body is damaged (checksum mismatch) (trace 'geo-1') [seq 2]",
    ],
}


def _run(script: Path, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.splitlines()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_snippet_runs_and_prints_what_the_page_says(name: str, tmp_path: Path) -> None:
    """The script exits 0 in an empty directory and prints the expected lines in order."""
    lines = _run(SNIPPETS / name, tmp_path)
    at = 0
    for expected in EXPECTED[name]:
        found = [i for i in range(at, len(lines)) if lines[i].startswith(expected)]
        assert found, f"{name}: {expected!r} not printed after line {at}:\n" + "\n".join(lines)
        at = found[0] + 1


def test_every_snippet_is_run_and_shown() -> None:
    """Each script in docs/snippets is checked above and included by some page, and every
    include names a script and a section that exist."""
    scripts = {p.name for p in SNIPPETS.glob("*.py")}
    assert scripts == set(EXPECTED)
    shown: set[str] = set()
    for page in (ROOT / "docs").rglob("*.md"):
        for name, section in INCLUDE.findall(page.read_text()):
            assert name in scripts, f"{page.name} includes a missing {name}"
            if section:
                text = (SNIPPETS / name).read_text()
                assert f"[start:{section}]" in text, f"{page.name}: {name} has no {section}"
                assert f"[end:{section}]" in text, f"{page.name}: {name} has no end of {section}"
            shown.add(name)
    assert scripts == shown


OUTPUT = re.compile(r"<!-- output of docs/snippets/([\w.]+\.py) -->\n```text\n(.*?)```", re.DOTALL)


def test_quoted_output_is_what_the_script_prints(tmp_path: Path) -> None:
    """A ``text`` block marked ``<!-- output of docs/snippets/X.py -->`` holds lines X prints,
    in order (log lines may come between them)."""
    quoted = [m for p in (ROOT / "docs").rglob("*.md") for m in OUTPUT.finditer(p.read_text())]
    assert quoted, "some page quotes a script's output"
    for match in quoted:
        name, block = match.group(1), match.group(2)
        run_dir = tmp_path / name
        run_dir.mkdir(exist_ok=True)
        lines = iter(_run(SNIPPETS / name, run_dir))
        for expected in block.splitlines():
            assert any(line == expected for line in lines), f"{name} does not print {expected!r}"


# Pages written since the snippet rule: their Python code comes from docs/snippets only.
SNIPPET_ONLY_PAGES = [
    "concepts/resilience.md",
    "concepts/reruns.md",
    "concepts/telemetry.md",
    "concepts/values-and-damage.md",
    "how-to/retry.md",
    "how-to/rerun.md",
    "how-to/telemetry.md",
    "concepts/conversations.md",
    "reference/wire.md",
    "how-to/workers.md",
]
# (how-to/crash-recovery.md and how-to/chat-ui.md predate the rule: older blocks remain there.)


@pytest.mark.parametrize("page", SNIPPET_ONLY_PAGES)
def test_page_shows_only_python_that_is_run(page: str) -> None:
    """Every ``python`` code block of the page (if any) is one include of a snippet section."""
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    for _indent, body in blocks:
        assert INCLUDE.fullmatch(body.strip()), (
            f"{page}: a python block not from a snippet:\n{body}"
        )


def test_snippets_pass_the_linter() -> None:
    """The scripts follow the project's ruff rules and formatting, as the package does."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip(f"ruff is not installed next to {sys.executable}")
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [str(ruff), *args, str(SNIPPETS)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert 0 == proc.returncode, proc.stdout + proc.stderr


def test_decisions_page_includes_every_readme_section_marked_for_the_docs() -> None:
    """Each README section between snippet markers is included by a page (the decision sections
    by the Decisions page), and
    the included text links nowhere the site cannot reach (no relative Markdown links)."""
    readme = (ROOT / "README.md").read_text()
    sections = re.findall(r"<!-- --8<-- \[start:(\w+)\] -->", readme)
    assert {"semantics", "resilience", "telemetry", "wire"} <= set(sections)
    decisions = (ROOT / "docs" / "decisions.md").read_text()
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for name in sections:
        if name in {"semantics", "resilience", "telemetry", "wire"}:
            assert f'--8<-- "README.md:{name}"' in decisions, name
        assert f'--8<-- "README.md:{name}"' in pages, name
        start = readme.index(f"<!-- --8<-- [start:{name}] -->")
        body = readme[start : readme.index(f"<!-- --8<-- [end:{name}] -->", start)]
        links = re.findall(r"\]\(([^)]+)\)", body)
        assert [t for t in links if "://" not in t] == [], f"README section {name} links {links}"
