"""``import graphexec`` never imports the web server; ``gx.web`` loads it on first use."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import graphexec as gx
loaded = sorted(m for m in sys.modules
                if m.split('.')[0] in ('starlette', 'sse_starlette', 'uvicorn')
                or m.startswith('graphexec.web'))
print(','.join(loaded))
print(gx.web.create_app.__module__, 'starlette' in sys.modules)
"""


def test_import_graphexec_does_not_load_the_web_server() -> None:
    """Starlette, sse-starlette, uvicorn and graphexec.web stay out until gx.web is used."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK], check=False, capture_output=True, text=True
    )
    assert 0 == done.returncode, done.stderr
    before, after = done.stdout.splitlines()
    assert "" == before
    assert "graphexec.web._app True" == after
