"""The ``graphexec`` command line, run through its real entry point against a SQLite file.

Each test gets a copy of a store seeded by ``cli_graphs.seed``: ``wait-1`` waits at barrier
``approval#1``, ``done-1`` completed, ``fail-1`` failed at node ``boom``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import GRAPHS, SCRIPT, Cli, Result, cli_env


def assert_error(result: Result, code: int, *words: str) -> None:
    """The command failed with ``code``, one line on stderr naming ``words``, no traceback."""
    assert code == result.code, result
    lines = result.err.splitlines()
    assert 1 == len(lines), result.err
    assert lines[0].startswith("graphexec: error: ")
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.err + result.out


class TestHelp:
    def test_help_lists_every_command(self, cli: Cli) -> None:
        """--help exits 0 and names each command and the exit codes."""
        result = cli("--help")
        assert 0 == result.code
        for command in ("runs", "show", "history", "approve", "reject", "edit", "resume"):
            assert command in result.out
        for command in ("fork", "mermaid", "prune"):
            assert command in result.out
        assert "3 not found" in result.out

    def test_python_dash_m(self, cli: Cli) -> None:
        """``python -m graphexec`` is the same command line."""
        result = cli("runs", "--json", module=True)
        assert 0 == result.code, result
        assert {"wait-1", "done-1", "fail-1"} == {r["trace_id"] for r in result.json()}

    def test_version(self, cli: Cli) -> None:
        """--version prints graphexec's version."""
        import graphexec

        assert f"graphexec {graphexec.__version__}\n" == cli("--version").out

    def test_help_loads_no_store_and_no_rich(self) -> None:
        """--help imports neither rich nor the SQLite store nor structlog (lazy imports)."""
        code = (
            "import sys; from graphexec.cli import run; run(['--help']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'rich', 'aiosqlite', 'sqlite3', 'structlog'}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        assert "[]" == out.splitlines()[-1]


class TestRuns:
    def test_table(self, cli: Cli) -> None:
        """runs prints a table with every run, its graph, status and waiting barrier."""
        result = cli("runs")
        assert 0 == result.code, result
        lines = result.out.splitlines()
        assert ["TRACE", "GRAPH", "STATUS"] == lines[0].split()[:3]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert ["wait-1", "refund", "waiting", "2", "approval", "approval#1"] == rows["wait-1"][:6]
        assert ["done-1", "simple", "completed"] == rows["done-1"][:3]
        assert ["fail-1", "failing", "failed"] == rows["fail-1"][:3]

    def test_json(self, cli: Cli) -> None:
        """runs --json prints a list of plain objects (fields by name)."""
        runs = {r["trace_id"]: r for r in cli("runs", "--json").json()}
        assert {"wait-1", "done-1", "fail-1"} == set(runs)
        waiting = runs["wait-1"]
        assert "waiting" == waiting["status"]
        assert "approval#1" == waiting["pending_barrier"]
        assert ["approval"] == waiting["barrier_nodes"]
        assert None is waiting["parent"]

    def test_filters(self, cli: Cli) -> None:
        """--status, --graph and --limit filter the list."""
        assert ["wait-1"] == [
            r["trace_id"] for r in cli("runs", "--status", "waiting", "--json").json()
        ]
        assert ["done-1"] == [
            r["trace_id"] for r in cli("runs", "--graph", "simple", "--json").json()
        ]
        assert 1 == len(cli("runs", "--limit", "1", "--json").json())
        assert "no runs" == cli("runs", "--graph", "nothing").out.strip()

    def test_bad_status_is_a_usage_error(self, cli: Cli) -> None:
        """An unknown --status is refused (exit 2), not silently matched by nothing."""
        assert_error(cli("runs", "--status", "done"), 2, "--status", "completed")


class TestShow:
    def test_table(self, cli: Cli) -> None:
        """show prints status, step, next node, the pending barrier, its prompt and the state."""
        result = cli("show", "wait-1")
        assert 0 == result.code, result
        fields = {
            line.split("  ")[0]: line.split("  ", 1)[-1].strip() for line in result.out.splitlines()
        }
        assert "waiting" == fields["status"]
        assert "2" == fields["step"]
        assert "approval" == fields["next node"]
        assert fields["waiting at"].startswith("approval#1")
        assert '{"amount":120.0}' == fields["prompt"]
        assert '"ticket": "t"' in result.out

    def test_json(self, cli: Cli) -> None:
        """show --json prints the RunState as one object; the pending barrier is an object too."""
        state = cli("show", "wait-1", "--json").json()
        assert "waiting" == state["status"]
        assert {"ticket": "t", "amount": 120.0, "log": ["assessed"]} == state["state"]
        assert "approval#1" == state["pending_barrier"]["barrier_id"]
        assert {"amount": 120.0} == state["pending_barrier"]["prompt"]

    def test_failed_run_shows_its_error(self, cli: Cli) -> None:
        """A failed run shows its status, the node it stopped at and the error."""
        state = cli("show", "fail-1", "--json").json()
        assert ("failed", "boom") == (state["status"], state["next_node"])
        assert "the flaky service is down" in state["error"]["message"]
        assert ("NodeExecutionFailed", "boom") == (state["error"]["type"], state["error"]["node"])

    def test_at_a_checkpoint(self, cli: Cli) -> None:
        """--seq shows the run as of that checkpoint; a seq it does not have exits 3."""
        first = cli("show", "wait-1", "--seq", "1", "--json").json()
        assert ("running", 1, {"ticket": "t"}) == (first["status"], first["seq"], first["state"])
        assert_error(cli("show", "wait-1", "--seq", "9"), 3, "seq 9")

    def test_unknown_run_is_not_found(self, cli: Cli) -> None:
        """An unknown trace id exits 3 with one line."""
        assert_error(cli("show", "nope"), 3, "'nope'")

    def test_missing_store_file_is_not_found(self, cli: Cli, workdir: Path) -> None:
        """A store path that does not exist exits 3 and creates nothing."""
        assert_error(cli("show", "wait-1", "--store", "missing.db"), 3, "missing.db")
        assert not (workdir / "missing.db").exists()

    def test_sqlite_url(self, cli: Cli, workdir: Path) -> None:
        """--store takes a sqlite:/// URL (relative) and a sqlite://// URL (absolute)."""
        assert 0 == cli("show", "done-1", "--store", "sqlite:///runs.db").code
        assert 0 == cli("show", "done-1", "--store", f"sqlite:///{workdir}/runs.db").code

    def test_postgres_url_opens_a_postgres_store(self, cli: Cli) -> None:
        """A postgresql:// URL opens a PostgresStore: a server that does not answer is one line
        naming it, without the password (exit 1); tests/checkpoint/test_postgres.py reads runs
        through such a URL from a real server."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = cli("runs", "--store", f"postgresql://u:pw@127.0.0.1:{port}/db?schema=s")
        assert_error(result, 1, f"127.0.0.1:{port}/db schema s")
        assert "pw" not in result.err


class TestHistory:
    def test_table_and_json(self, cli: Cli) -> None:
        """history lists the checkpoints oldest first, as a table or as objects."""
        rows = cli("history", "wait-1", "--json").json()
        assert [1, 2, 3] == [r["seq"] for r in rows]
        assert "base" == rows[0]["kind"]
        assert "barrier_waiting" == rows[1]["trigger"]
        table = cli("history", "wait-1").out.splitlines()
        assert ["SEQ", "KIND", "STEP", "TRIGGER"] == table[0].split()[:4]
        assert ["1", "base", "0", "start"] == table[1].split()[:4]

    def test_pages_and_values(self, cli: Cli) -> None:
        """--before and --limit page backwards; --values adds the state at each checkpoint."""
        page = cli("history", "wait-1", "--before", "3", "--limit", "1", "--json").json()
        assert [2] == [r["seq"] for r in page]
        rows = cli("history", "wait-1", "--values", "--json").json()
        assert {"ticket": "t"} == rows[0]["state"]
        assert ["assessed"] == rows[-1]["state"]["log"]
        assert '{"ticket":"t"}' in cli("history", "wait-1", "--values").out

    def test_unknown_run(self, cli: Cli) -> None:
        """history of an unknown trace exits 3."""
        assert_error(cli("history", "nope"), 3, "'nope'")


class TestDecideAndResume:
    def test_approve_then_resume_completes_the_run(self, cli: Cli) -> None:
        """approve queues the decision; resume applies it and runs to the end (exit 0)."""
        approved = cli("approve", "wait-1", "approval#1")
        assert 0 == approved.code, approved
        assert "queued approve for approval#1 of run wait-1" in approved.out
        resumed = cli("resume", "wait-1", "--graphs", GRAPHS)
        assert 0 == resumed.code, resumed
        kinds = [line.split()[2] for line in resumed.out.splitlines()]
        assert "BarrierResolved" in kinds
        assert "GraphComplete" == kinds[-1]
        assert 'refund: {"token":"refunding"}' in resumed.out
        state = cli("show", "wait-1", "--json").json()
        assert ("completed", 120.0) == (state["status"], state["state"]["refunded"])

    def test_reject_with_reason(self, cli: Cli) -> None:
        """reject --reason routes the run to its reject branch, with the reason in the state."""
        assert 0 == cli("reject", "wait-1", "approval#1", "--reason", "too much").code
        events = cli("resume", "wait-1", "--graphs", GRAPHS, "--json").json_lines()
        resolved = [e for e in events if e["type"] == "BarrierResolved"]
        assert [("reject", "too much")] == [(e["decision"], e["reason"]) for e in resolved]
        assert ["assessed", "declined: too much"] == events[-1]["state"]["log"]

    def test_edit_sets_state_then_approves(self, cli: Cli) -> None:
        """edit --set key=json approves with the update applied first."""
        decided = cli("edit", "wait-1", "approval#1", "--set", "amount=50", "--json")
        assert 0 == decided.code, decided
        assert {"type": "edit", "update": {"amount": 50}} == decided.json()["decision"]
        events = cli("resume", "wait-1", "-g", GRAPHS, "--json").json_lines()
        assert "GraphComplete" == events[-1]["type"]
        assert 50 == events[-1]["state"]["refunded"]

    def test_resume_without_decision_stops_at_the_barrier(self, cli: Cli) -> None:
        """Without a decision, resume stops again at the barrier: exit 0, still waiting."""
        result = cli("resume", "wait-1", "--graphs", GRAPHS, "--json")
        assert 0 == result.code, result
        assert "BarrierWaiting" == result.json_lines()[-1]["type"]
        assert "waiting" == cli("show", "wait-1", "--json").json()["status"]

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_signal_checkpoints_and_releases_the_run(
        self, cli: Cli, workdir: Path, sig: signal.Signals
    ) -> None:
        """A signal to ``resume --wait`` exits 130 with one line, leaving the run waiting and
        free: the next resume starts at once (no RunLocked until the lease expires)."""
        proc = subprocess.Popen(
            [str(SCRIPT), "resume", "wait-1", "--graphs", GRAPHS, "--wait"],
            cwd=workdir,
            env=cli_env(workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if "BarrierWaiting" in line:
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert_error(Result(proc.returncode, out, err), 130, "interrupted", "waiting")
        assert "waiting" == cli("show", "wait-1", "--json").json()["status"]
        assert 0 == cli("approve", "wait-1", "approval#1").code
        assert 0 == cli("resume", "wait-1", "--graphs", GRAPHS).code

    def test_resume_a_failed_run_fails_again(self, cli: Cli) -> None:
        """A failed run resumes at its failed node; failing again exits 1 with one line."""
        result = cli("resume", "fail-1", "--graphs", GRAPHS)
        assert_error(result, 1, "fail-1", "the flaky service is down")
        assert "GraphFailed" in result.out

    def test_graphexec_log_lines_only_when_asked(self, cli: Cli) -> None:
        """graphexec's own log lines stay off unless GRAPHEXEC_LOG names a level (to stderr)."""
        quiet = cli("resume", "fail-1", "--graphs", GRAPHS, "--json")
        assert 1 == len(quiet.err.splitlines())
        loud = cli("resume", "fail-1", "--graphs", GRAPHS, "--json", env={"GRAPHEXEC_LOG": "error"})
        assert 1 == loud.code
        assert "level='error' event='run failed'" in loud.err
        assert all(line.startswith("{") for line in loud.out.splitlines())
        bad = cli("resume", "fail-1", "--graphs", GRAPHS, env={"GRAPHEXEC_LOG": "loud"})
        assert_error(bad, 2, "GRAPHEXEC_LOG")

    def test_resume_a_completed_run_is_a_conflict(self, cli: Cli) -> None:
        """Resuming a completed run exits 4."""
        assert_error(cli("resume", "done-1", "--graphs", GRAPHS), 4, "done-1")

    def test_decision_for_a_completed_run_is_a_conflict(self, cli: Cli) -> None:
        """A decision for a completed run exits 4."""
        assert_error(cli("approve", "done-1", "approval#1"), 4, "done-1")

    @pytest.mark.parametrize(
        ("barrier", "code", "word"),
        [("approval#x", 2, "approval#x"), ("approval", 2, "approval#1"), ("nope#1", 3, "nope")],
    )
    def test_bad_barrier_ids(self, cli: Cli, barrier: str, code: int, word: str) -> None:
        """A malformed id or a bare node name is a usage error; an unknown barrier is not found."""
        assert_error(cli("approve", "wait-1", barrier), code, word)

    def test_bad_json_in_set(self, cli: Cli) -> None:
        """A --set value that is not JSON exits 2 and says strings need quotes."""
        assert_error(cli("edit", "wait-1", "approval#1", "--set", "note=hello"), 2, "quotes")

    def test_graphs_that_do_not_load(self, cli: Cli) -> None:
        """A --graphs target that does not import, or holds no graph, exits 2."""
        assert_error(cli("resume", "wait-1", "--graphs", "nosuch:graphs"), 2, "nosuch")
        assert_error(cli("resume", "wait-1", "--graphs", "cli_graphs:seed"), 2, "function")
        assert_error(cli("resume", "wait-1"), 2, "--graphs")

    def test_graph_missing_from_graphs(self, cli: Cli) -> None:
        """A run whose graph --graphs does not hold exits 3, naming what it holds."""
        result = cli("resume", "wait-1", "--graphs", "cli_graphs:simple_graph")
        assert_error(result, 3, "'refund'", "simple")


class TestFork:
    def test_fork_with_update(self, cli: Cli) -> None:
        """fork starts a new run from a checkpoint with the update applied; the original stays."""
        events = cli(
            "fork", "done-1", "1", "-g", GRAPHS, "--update", "n=5", "--trace-id", "f-1", "--json"
        ).json_lines()
        assert ("GraphStart", "f-1", "done-1") == (
            events[0]["type"],
            events[0]["trace_id"],
            events[0]["parent"],
        )
        assert {"n": 60} == events[-1]["state"]
        assert {"n": 20} == cli("show", "done-1", "--json").json()["state"]
        parent = cli("show", "f-1", "--json").json()["parent"]
        assert ("done-1", 1, "fork") == (parent["trace_id"], parent["seq"], parent["kind"])
        assert "forked from  done-1 at seq 1" in cli("show", "f-1").out

    def test_unknown_seq_is_not_found(self, cli: Cli) -> None:
        """A seq the run does not have exits 3."""
        assert_error(cli("fork", "done-1", "99", "-g", GRAPHS), 3, "seq 99")

    def test_taken_trace_id_is_a_conflict(self, cli: Cli) -> None:
        """--trace-id of an existing run exits 4."""
        assert_error(cli("fork", "done-1", "1", "-g", GRAPHS, "--trace-id", "wait-1"), 4, "wait-1")


class TestRerun:
    def test_dry_run_prints_the_plan_and_writes_nothing(self, cli: Cli) -> None:
        """rerun --dry-run shows which executions run and why, and starts no run."""
        result = cli("rerun", "done-1", "second", "-g", GRAPHS, "--dry-run")
        assert 0 == result.code, result
        assert "second" in result.out and "target" in result.out
        assert "1 to run, 1 reused" in result.out
        plan = cli("rerun", "done-1", "second", "-g", GRAPHS, "--dry-run", "--json").json()
        assert [("first", "reuse"), ("second", "run")] == [
            (row["node"], row["action"]) for row in plan["rows"]
        ]
        assert ["done-1", "fail-1", "wait-1"] == sorted(
            r["trace_id"] for r in cli("runs", "--json").json()
        )

    def test_rerun_runs_only_the_target(self, cli: Cli) -> None:
        """rerun executes the plan as a new trace: the reused node sends no NodeStart."""
        events = cli("rerun", "done-1", "second", "-g", GRAPHS, "--trace-id", "r-1", "--json")
        started = [e["node"] for e in events.json_lines() if e["type"] == "NodeStart"]
        assert ["second"] == started
        assert {"n": 20} == cli("show", "r-1", "--json").json()["state"]

    def test_unknown_node_is_not_found(self, cli: Cli) -> None:
        """A target the graph does not have exits 3, listing the nodes."""
        assert_error(cli("rerun", "done-1", "nope", "-g", GRAPHS, "--dry-run"), 3, "'nope'")


class TestMermaid:
    def test_one_graph(self, cli: Cli) -> None:
        """mermaid prints the flowchart of the named graph."""
        result = cli("mermaid", "cli_graphs:refund_graph")
        assert 0 == result.code, result
        assert result.out.startswith("flowchart TD")
        as_json = cli("mermaid", "cli_graphs:refund_graph", "--json").json()
        assert ("refund", result.out) == (as_json["graph"], as_json["mermaid"].rstrip("\n") + "\n")

    def test_several_graphs_need_a_name(self, cli: Cli) -> None:
        """A target with several graphs needs --graph; an unknown name exits 3."""
        assert_error(cli("mermaid", GRAPHS), 2, "--graph")
        assert cli("mermaid", GRAPHS, "--graph", "simple").out.startswith("flowchart TD")
        assert_error(cli("mermaid", GRAPHS, "--graph", "nope"), 3, "nope")


class TestPrune:
    def test_dry_run_then_prune(self, cli: Cli) -> None:
        """prune --dry-run lists and keeps; prune removes completed runs only by default."""
        dry = cli("prune", "--older-than", "0s", "--dry-run", "--json").json()
        assert {"pruned": ["done-1"], "dry_run": True} == dry
        assert 3 == len(cli("runs", "--json").json())
        assert ["done-1"] == cli("prune", "--older-than", "0", "--json").json()["pruned"]
        assert {"wait-1", "fail-1"} == {r["trace_id"] for r in cli("runs", "--json").json()}

    def test_status_and_age(self, cli: Cli) -> None:
        """--status failed prunes failed runs; a long --older-than prunes nothing."""
        assert (
            []
            == cli("prune", "--older-than", "1d12h", "--status", "failed", "--json").json()[
                "pruned"
            ]
        )
        result = cli("prune", "--older-than", "0s", "--status", "failed")
        assert ["pruned 1 run", "fail-1"] == [line.strip() for line in result.out.splitlines()]

    def test_waiting_runs_are_never_pruned(self, cli: Cli) -> None:
        """--status waiting is refused (exit 2)."""
        assert_error(cli("prune", "--older-than", "0s", "--status", "waiting"), 2, "waiting")

    def test_bad_duration(self, cli: Cli) -> None:
        """A duration that does not parse exits 2."""
        assert_error(cli("prune", "--older-than", "soon"), 2, "soon")


class TestUsage:
    def test_unknown_option_is_one_line(self, cli: Cli) -> None:
        """Click's usage errors are one line too, exit 2."""
        assert_error(cli("runs", "--bogus"), 2, "--bogus")

    def test_missing_store(self, cli: Cli) -> None:
        """Without --store or GRAPHEXEC_STORE, a command that needs one exits 2."""
        assert_error(cli("runs", env={"GRAPHEXEC_STORE": ""}), 2, "--store")


def test_import_graphexec_loads_no_cli_dependency() -> None:
    """``import graphexec`` imports neither typer, click nor rich."""
    code = (
        "import sys, graphexec, graphexec.checkpoint; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'click', 'rich'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "[]" == out.strip()
