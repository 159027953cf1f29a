"""Fixtures for the command-line tests: a SQLite file with seeded runs, and the real CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import SCRIPT, Cli, Result, cli_env


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding the runs of ``cli_graphs.seed`` (wait-1, done-1, fail-1)."""
    path = tmp_path_factory.mktemp("seed") / "runs.db"
    # Seeded by importing the module (as --graphs does), so the graphs hash the same.
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import anyio, cli_graphs; anyio.run(cli_graphs.seed, {str(path)!r})",
        ],
        env=cli_env(path.parent),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


@pytest.fixture
def workdir(seeded: Path, tmp_path: Path) -> Path:
    """A fresh copy of the seeded store as ``runs.db`` in the test's own directory."""
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{seeded}{suffix}")
        if source.exists():
            shutil.copy(source, tmp_path / f"runs.db{suffix}")
    return tmp_path


@pytest.fixture
def cli(workdir: Path) -> Cli:
    """``cli("runs", "--json")``: run the installed ``graphexec`` script in ``workdir``, with
    ``GRAPHEXEC_STORE`` pointing at the seeded copy."""

    def run(*args: str, module: bool = False, env: dict[str, str] | None = None) -> Result:
        command = [sys.executable, "-m", "graphexec"] if module else [str(SCRIPT)]
        proc = subprocess.run(
            [*command, *args],
            check=False,
            cwd=workdir,
            env={**cli_env(workdir), **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
