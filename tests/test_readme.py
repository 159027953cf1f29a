"""README's first example is a program a new user runs as it is: twice in a row too (the second
run is the conversation's next turn on the same trace id)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_example_runs_twice_in_a_row(tmp_path: Path) -> None:
    """Run the first python block of README.md twice in one directory: both complete."""
    code = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)[0]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)],
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert all(out.startswith("completed ") for out in outputs), outputs
    assert "'log': ['refund']" in outputs[0]
    assert "'log': ['refund', 'refund']" in outputs[1]  # turn 2 appended to the same trace
