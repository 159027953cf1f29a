"""What the command-line tests share: the real entry point and what a run of it returned."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
GRAPHS = "cli_graphs:graphs"
# The console script pip installed next to this interpreter: the real entry point.
SCRIPT = Path(sys.executable).parent / "graphexec"


@dataclass
class Result:
    """What one command-line run printed and returned."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]


Cli = Callable[..., Result]


def cli_env(cwd: Path) -> dict[str, str]:
    """The environment the command line runs in: the test graphs importable, the store set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHEXEC_")}
    env["PYTHONPATH"] = str(HERE)
    env["GRAPHEXEC_STORE"] = str(cwd / "runs.db")
    env["COLUMNS"] = "200"
    return env


@contextmanager
def postgres_url(prefix: str) -> Iterator[str]:
    """A store URL naming a schema of its own on the test Postgres server (``GRAPHEXEC_TEST_PG``,
    as the checkpoint tests use), dropped afterwards; the test is skipped, saying why, when no
    server answers."""
    import pytest

    dsn = os.environ.get("GRAPHEXEC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except Exception as exc:  # noqa: BLE001 - no extra, no server: skip, saying why
        pytest.skip(f"no Postgres server at {dsn}: {exc}")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{sep}schema={schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
