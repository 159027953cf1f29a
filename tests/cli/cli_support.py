"""What the command-line tests share: the real entry point and what a run of it returned."""

from __future__ import annotations

import json
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
