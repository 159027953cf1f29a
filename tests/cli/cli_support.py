"""What the command-line tests share: the real entry point and what a run of it returned."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
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
