"""The documentation's tutorial script runs as the tutorial says (a real SIGKILL included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TUTORIAL = Path(__file__).parents[1] / "examples" / "tutorial.py"


def test_tutorial_runs_end_to_end(tmp_path: Path) -> None:
    """Streams tokens, approves in process, and resumes a killed run from another process."""
    proc = subprocess.run(
        [sys.executable, str(TUTORIAL)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert "We are open 9 to 5, Monday to Friday." == lines[3].strip()
    assert "completed Your refund is on its way." in lines
    assert "approve#1: approve" in lines
    assert "completed ['classified as refund', 'refunded']" == lines[-1]
    assert (tmp_path / ".demo" / "tutorial.db").exists()
