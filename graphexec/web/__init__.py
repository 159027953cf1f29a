"""The web server (extra ``web``): ``gx.web.create_app(ex)``, a Starlette app with the JSON API,
each run's events as SSE and a chat page; ``gx.web.serve(...)`` runs it with uvicorn.

Install with ``pip install 'graphexec[web]'``. ``import graphexec`` never imports this package
(nor Starlette): ``gx.web`` loads it on first use. The HTTP API and the SSE semantics are
described in the README, section "Serving a chat UI".
"""

from __future__ import annotations

from ._app import create_app
from ._serve import serve

__all__ = ("create_app", "serve")
