"""The Starlette app: the JSON endpoints, the event stream as SSE, auth, errors, the chat page.

Every endpoint is a thin call into the executor (``ex.start``, ``ex.events``, ``ex.decide``,
``ex.cancel``, ``ex.get_state``, ``ex.runs``): the server adds no run semantics of its own, so
what a page sees is what a script using the executor sees. Bodies are decoded with msgspec into
the structs below (a body that does not fit is a 400 naming the field); everything sent is
encoded with msgspec as JSON objects (the wire format in the README).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._decisions import Decision
from .._log import get_logger
from ..exceptions import (
    GraphError,
    InvalidDecision,
    InvalidTraceId,
    LeaseLost,
    RunExists,
    RunFinished,
    RunLocked,
    RunNotFound,
    StoreError,
    StoreRequired,
    UsageError,
)

if TYPE_CHECKING:
    from .._executor import GraphExecutor

__all__ = ("create_app",)

STATIC = Path(__file__).parent / "static"
"""The chat page: plain HTML, CSS and JavaScript shipped in the package (no build step)."""

SSE_RETRY_MS = 1000
"""What the stream tells a browser to wait before it reconnects (the ``retry:`` field)."""

SSE_PING_SECONDS = 15
"""A comment line this often keeps idle streams open through proxies that close quiet ones."""

_json = msgspec.json.Encoder()


class StartRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /runs``: start a run, or a conversation's next turn on a finished trace."""

    graph: str | None = None
    """A graph name of the registry (``graphs=``); may be left out when it holds one graph."""
    input: dict[str, Any] | None = None
    """The run's input (the first turn's initial state, or what the next turn applies)."""
    trace_id: str | None = None
    """The conversation; a new random id when left out."""


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /runs/{trace_id}/decisions``: decide one barrier occurrence."""

    barrier_id: str
    """``"<node>#<occurrence>"``, as the ``BarrierWaiting`` event and the run's state name it."""
    decision: Decision
    """``{"type": "approve"}``, ``{"type": "reject", "reason": ...}``,
    ``{"type": "edit", "update": {...}}`` or ``{"type": "skip"}``."""


class HTTPProblem(Exception):
    """An error the app answers with its own status code (bad body, unknown graph, auth)."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


_STATUS: tuple[tuple[type[GraphError], int], ...] = (
    (RunNotFound, 404),
    (InvalidDecision, 422),
    (InvalidTraceId, 422),
    (RunExists, 409),
    (RunFinished, 409),
    (RunLocked, 409),
    (LeaseLost, 409),
    (StoreError, 500),
    (UsageError, 400),
)
"""HTTP status by error class, first match wins: 404 for an unknown trace, 422 for a decision or
trace id that cannot be accepted, 409 for a request the run's state refuses (not finished,
finished, held by another driver), 400 for other misuse, 500 for store failures and the rest
(a run error that reaches a request is the server's failure, not the caller's)."""


def status_of(exc: GraphError) -> int:
    """The HTTP status of a graphexec error: what the caller should fix or retry."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(http_status: int, type_: str, message: str, **extra: Any) -> Response:
    """``{"error": {"type", "message", ...}}`` with ``http_status``."""
    body = {"error": {"type": type_, "message": message, **extra}}
    return Response(_json.encode(body), status_code=http_status, media_type="application/json")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_json.encode(value), status_code=status, media_type="application/json")


def _decode(data: bytes, type_: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(data or b"{}", type=type_)
    except msgspec.ValidationError as exc:
        raise HTTPProblem(400, "BadRequest", f"{what}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPProblem(400, "BadRequest", f"{what} is not JSON: {exc}") from exc


Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    ex: GraphExecutor,
    *,
    token: str | None = None,
    chat_graph: str | None = None,
    chat_input_key: str = "message",
) -> Starlette:
    """A Starlette app serving ``ex``'s runs over HTTP, and a chat page at ``/``.

    The executor must be entered (``async with gx.GraphExecutor(store=..., graphs=[...]) as
    ex``) and have a store: runs are started in its task group and their events are read from
    its event log. ``graphs=`` is the set of graphs ``POST /runs`` may start.

    Args:
        ex: the executor whose runs the app serves.
        token: if set, every endpoint but the page and its static files needs
            ``Authorization: Bearer <token>`` (or ``?token=`` for an ``EventSource``, which
            cannot send headers); otherwise a 401 JSON error.
        chat_graph: the graph the chat page starts (default: the registry's only graph, or
            its first one).
        chat_input_key: the input key the chat page puts the typed message under.

    Endpoints (errors are ``{"error": {"type", "message", ...}}`` with the status named):
    ``POST /runs``, ``GET /runs``, ``GET /runs/{trace_id}``, ``GET /runs/{trace_id}/events``
    (SSE), ``POST /runs/{trace_id}/decisions``, ``POST /runs/{trace_id}/cancel``,
    ``GET /config`` (what the page needs), ``GET /`` (the page).
    """
    if ex.store is None:
        raise StoreRequired(
            "create_app(ex) needs an executor with a store: runs are read back and their "
            "events tailed from it (gx.GraphExecutor(store=gx.SQLiteStore(path), ...))"
        )
    log = get_logger()

    def graph_names() -> list[str]:
        return list(ex.graphs)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            given = request.query_params.get("token", "")
        return hmac.compare_digest(given.strip().encode(), token.encode())

    def guarded(fn: Endpoint, *, public: bool = False) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not public and not authorized(request):
                return error_response(
                    401,
                    "Unauthorized",
                    "this server needs a bearer token: Authorization: Bearer <token>",
                )
            try:
                return await fn(request)
            except HTTPProblem as exc:
                return error_response(exc.status, exc.type, exc.message)
            except GraphError as exc:
                status = status_of(exc)
                if status >= 500:
                    log.error("request failed", path=request.url.path, error=repr(exc))
                extra = {
                    k: v
                    for k in ("trace_id", "node", "seq")
                    if (v := getattr(exc, k, None)) is not None
                }
                if (run_status := getattr(exc, "status", None)) is not None:
                    extra["status"] = run_status
                return error_response(status, type(exc).__name__, str(exc), **extra)
            except ValueError as exc:  # a bad argument the library refused (a status filter)
                return error_response(400, "BadRequest", str(exc))

        return endpoint

    def pick_graph(name: str | None) -> Any:
        names = graph_names()
        if name is None:
            if len(names) != 1:
                raise HTTPProblem(
                    400,
                    "BadRequest",
                    f"say which graph to start ('graph'): this server has {sorted(names)}",
                )
            name = names[0]
        graph = ex.graphs.get(name)
        if graph is None:
            raise HTTPProblem(
                404, "GraphNotFound", f"no graph named {name!r}: this server has {sorted(names)}"
            )
        return graph

    async def start(request: Request) -> Response:
        body: StartRequest = _decode(await request.body(), StartRequest, "POST /runs body")
        graph = pick_graph(body.graph)
        trace_id = await ex.start(graph, body.input, trace_id=body.trace_id)
        return json_response(
            {"trace_id": trace_id, "graph": graph.name, "events": f"/runs/{trace_id}/events"},
            202,
        )

    async def list_runs(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "100"))
        except ValueError as exc:
            raise HTTPProblem(400, "BadRequest", f"limit must be an integer: {exc}") from exc
        runs = await ex.runs(status=q.get("status"), graph_name=q.get("graph"), limit=limit)
        return json_response(runs)

    async def get_run(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        return json_response(await _state(trace_id))

    async def _state(trace_id: str) -> Any:
        assert ex.store is not None
        info = await ex.store.get_run(trace_id)
        graph = ex.graphs.get(info.graph_name) if info is not None else None
        return await ex.get_state(trace_id, graph=graph)

    async def events(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        after = _after(request)
        assert ex.store is not None
        if await ex.store.get_run(trace_id) is None:
            raise RunNotFound(f"no run with trace id {trace_id!r} in the store", trace_id=trace_id)
        return EventSourceResponse(
            _frames(ex, trace_id, after),
            ping=SSE_PING_SECONDS,
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
        )

    async def decide(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        body: DecisionRequest = _decode(
            await request.body(), DecisionRequest, "POST /runs/{trace_id}/decisions body"
        )
        await ex.decide(trace_id, body.barrier_id, body.decision)
        # A run no driver holds (this server restarted while it waited) is resumed here: the
        # decision is in the store now, which is what recover() looks for.
        try:
            resumed = await ex.recover()
        except GraphError as exc:  # the decision is stored: the periodic pass retries this
            log.warning("recover after a decision failed", trace_id=trace_id, error=repr(exc))
            resumed = []
        return json_response(
            {
                "trace_id": trace_id,
                "barrier_id": body.barrier_id,
                "decision": body.decision,
                "resumed": trace_id in resumed,
            },
            202,
        )

    async def cancel(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        await ex.cancel(trace_id)
        return json_response({"trace_id": trace_id, "cancel": "requested"}, 202)

    async def config(request: Request) -> Response:
        names = graph_names()
        return json_response(
            {
                "graphs": names,
                "chat_graph": chat_graph or (names[0] if names else None),
                "chat_input_key": chat_input_key,
                "auth": token is not None,
            }
        )

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/", guarded(page, public=True), methods=["GET"]),
        Route("/config", guarded(config), methods=["GET"]),
        Route("/runs", guarded(start), methods=["POST"]),
        Route("/runs", guarded(list_runs), methods=["GET"]),
        Route("/runs/{trace_id}", guarded(get_run), methods=["GET"]),
        Route("/runs/{trace_id}/events", guarded(events), methods=["GET"]),
        Route("/runs/{trace_id}/decisions", guarded(decide), methods=["POST"]),
        Route("/runs/{trace_id}/cancel", guarded(cancel), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "NotFound", f"no endpoint {request.method} {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}"
        )

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("request crashed", path=request.url.path, error=repr(exc))
        return error_response(500, "InternalError", f"{type(exc).__name__}: {exc}")

    return Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_allowed, 500: internal},
    )


def _after(request: Request) -> int | None:
    """Where the stream starts: after ``Last-Event-ID`` (a browser reconnecting), else after
    ``?after=`` (a page that kept its place), else from the first event."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return None
    try:
        after = int(raw)
    except ValueError as exc:
        raise HTTPProblem(
            400, "BadRequest", f"Last-Event-ID / after must be an event id (an integer): {raw!r}"
        ) from exc
    if after < 0:
        raise HTTPProblem(400, "BadRequest", f"Last-Event-ID / after must be >= 0: {after}")
    return after


async def _frames(ex: GraphExecutor, trace_id: str, after: int | None) -> AsyncIterator[Any]:
    """One SSE frame per event: ``id:`` the event id, ``data:`` the event as JSON (tagged by
    ``"type"``). The first frame sets the browser's reconnect delay. A store error while
    tailing ends the stream with an ``event: stream-error`` frame (the headers are long sent)."""
    first = True
    try:
        async for event in ex.events(trace_id, after=after):
            yield ServerSentEvent(
                data=_json.encode(event).decode(),
                id=str(event.event_id),
                retry=SSE_RETRY_MS if first else None,
            )
            first = False
    except GraphError as exc:
        get_logger(trace_id=trace_id).error("event stream failed", error=repr(exc))
        yield ServerSentEvent(
            data=_json.encode({"type": type(exc).__name__, "message": str(exc)}).decode(),
            event="stream-error",
        )
