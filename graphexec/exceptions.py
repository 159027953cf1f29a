"""Every error graphexec raises, in one tree.

::

    GraphError                        base of everything below; catch this to catch them all
    ├── UsageError                    the call cannot be done as asked; fix the call
    │   ├── InvalidGraph (ValueError) build() found problems, or the graph cannot run this way
    │   ├── NodeNotFound (LookupError) a name that is not a node of the graph
    │   ├── InvalidDecision (ValueError) a barrier decision that cannot be accepted
    │   ├── GraphChanged              the graph no longer matches the checkpointed run
    │   ├── RunNotFound (LookupError) no run with this trace id in the store
    │   ├── RunFinished               the run already completed: nothing to resume or decide
    │   ├── RunExists                 the trace is not finished: resume it or decide its barrier
    │   ├── StoreRequired             the call needs GraphExecutor(store=...)
    │   ├── InvalidTraceId (ValueError) a trace id that is not a usable name (type, length, chars)
    │   └── PlanStale                 a re-run plan made before its source or graph changed
    ├── RunError                      the run itself failed (run.result.error, GraphFailed)
    │   ├── MissingEdge               Goto/Fallback to a target with no declared edge
    │   ├── Unrouted                  no edge matched after a node; lists every condition tried
    │   ├── StepsExceeded             the run (this turn) reached max_steps
    │   ├── NodeExecutionFailed       a node (or a parallel branch) raised; .cause holds it
    │   │   └── RetriesExhausted      every attempt a Retry allowed failed; .errors holds each
    │   ├── NodeTimeout               one attempt outlived timeout= (or heartbeat_timeout=)
    │   ├── CircuitOpen               the node's circuit breaker is open: the call failed fast
    │   ├── StateError                a delta or initial state that does not fit; merge conflicts
    │   └── Cancelled                 the run was cancelled (handle.cancel(), early exit)
    └── StoreError                    the store, or who may write to it
        ├── CheckpointError           a checkpoint could not be written, read or trusted
        ├── RunLocked                 another live driver holds the run's lease
        └── LeaseLost                 this driver's lease was taken over: it must stop writing

    NonRetryable, RetryAfter        raised by nodes to steer retries (not GraphErrors: they
                                    are signals from user code, never raised by graphexec)

A typical caller::

    try:
        result = await ex.execute(graph, state)
    except gx.NodeExecutionFailed as exc:
        print(exc.node, exc.cause)
    except gx.GraphError as exc:
        print(exc.trace_id, exc)

Every error carries what it is about as attributes (``trace_id``, ``node``, ``step``, ``key``,
``seq``, whichever apply); the executor fills ``trace_id`` and ``step`` on the way out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = (
    "Cancelled",
    "CheckpointError",
    "CircuitOpen",
    "GraphChanged",
    "GraphChangedWarning",
    "GraphError",
    "InvalidDecision",
    "InvalidGraph",
    "InvalidTraceId",
    "LeaseLost",
    "MissingEdge",
    "NodeExecutionFailed",
    "NodeNotFound",
    "NodeTimeout",
    "NonRetryable",
    "PlanStale",
    "RetriesExhausted",
    "RetryAfter",
    "RunError",
    "RunExists",
    "RunFinished",
    "RunLocked",
    "RunNotFound",
    "StateError",
    "StepsExceeded",
    "StoreError",
    "StoreRequired",
    "Unrouted",
    "UsageError",
)


class GraphError(Exception):
    """Base class of every error graphexec raises."""

    trace_id: str | None
    node: str | None
    step: int | None

    def __init__(
        self,
        message: str,
        *,
        trace_id: str | None = None,
        node: str | None = None,
        step: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.trace_id = trace_id
        self.node = node
        self.step = step

    def __str__(self) -> str:
        where = []
        if self.trace_id is not None:
            where.append(f"trace {self.trace_id!r}")
        if self.step is not None:
            where.append(f"step {self.step}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class UsageError(GraphError):
    """The group of errors raised at a call that cannot be done as asked (fix the call)."""


class RunError(GraphError):
    """The group of errors that end a run (``run.result.error``, the ``GraphFailed`` event)."""


class StoreError(GraphError):
    """The group of errors about the store: records, and who may write a trace (leases)."""


class InvalidGraph(UsageError, ValueError):
    """Raised when a graph fails validation, or cannot be run the way it was asked to."""

    def __init__(self, message: str, *, problems: Sequence[str] = (), **kw: Any) -> None:
        self.problems = list(problems) or [message]
        super().__init__(message, **kw)


class NodeNotFound(UsageError, LookupError):
    """Raised when a name does not refer to a node of the graph."""


class MissingEdge(RunError):
    """Raised when a node returns Goto or Fallback toward a target it has no edge to."""

    def __init__(self, message: str, *, target: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.target = target


class Unrouted(RunError):
    """Raised when no edge out of a node matched; ``conditions`` lists every one tried."""

    def __init__(self, message: str, *, conditions: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.conditions = list(conditions)


class StepsExceeded(RunError):
    """Raised when a run would take more than ``max_steps`` steps."""

    def __init__(self, message: str, *, max_steps: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.max_steps = max_steps


class NodeExecutionFailed(RunError):
    """Raised when a node raised; ``cause`` is the original exception.

    For a parallel node, ``failures`` maps each failed branch to its exception, and ``cause`` is
    the first failure (``fail_fast``) or an ExceptionGroup of all of them (``collect``).
    """

    def __init__(
        self,
        message: str,
        *,
        node: str,
        cause: BaseException,
        failures: Mapping[str, BaseException] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, node=node, **kw)
        self.cause = cause
        self.failures = dict(failures or {})
        self.kept: dict[str, Any] = {}
        """For a parallel or map node: what the branches that succeeded returned (kept in the
        checkpoint; the node's next execution at this step runs only the failed ones)."""
        self.__cause__ = cause


class StateError(RunError):
    """Raised when a state value or delta does not fit, or parallel branches conflict."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        branches: Sequence[str] = (),
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.key = key
        self.branches = list(branches)


class Cancelled(RunError):
    """Raised when a run was cancelled; its state was checkpointed first when a store is set."""


class CheckpointError(StoreError):
    """Raised when a checkpoint cannot be written, read or trusted (damaged, wrong format)."""

    def __init__(self, message: str, *, seq: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.seq = seq

    def __str__(self) -> str:
        base = super().__str__()
        return base if self.seq is None else f"{base} [seq {self.seq}]"


class GraphChanged(UsageError):
    """Raised when a checkpointed run cannot continue on the graph it is resumed with."""


class RunLocked(StoreError):
    """Raised when another live driver holds the lease on a trace.

    ``owner`` describes the holder (host, pid, instance), ``expires_at`` is when its lease runs
    out unless renewed (``time.time()`` seconds). A holder that is known to be dead (same host,
    process gone) never blocks; ``resume_from(..., take_over=True)`` overrides a live-looking one.
    """

    def __init__(
        self,
        message: str,
        *,
        expires_at: float | None = None,
        owner: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.expires_at = expires_at
        self.owner = owner


class LeaseLost(StoreError):
    """Raised at the next write of a driver whose lease was taken over (its fencing token is
    stale): it writes nothing more. Another process drives the trace now."""

    def __init__(self, message: str, *, token: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.token = token


class RunNotFound(UsageError, LookupError):
    """Raised when the store has no run with the given trace id."""


class RunFinished(UsageError):
    """Raised when resuming, or deciding for, a run that has already completed.

    Use ``ex.fork(graph, trace_id, seq)`` to start a new run from one of its checkpoints.
    """


class RunExists(UsageError):
    """Raised when starting a run (or a conversation's next turn) on a trace that is not
    finished: ``status`` says where it stands; resume it (``resume_from``) or decide the barrier
    it waits at instead."""

    def __init__(self, message: str, *, status: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status


class StoreRequired(UsageError):
    """Raised by a call that needs a checkpoint store on an executor without one."""


class InvalidDecision(UsageError, ValueError):
    """Raised when a barrier decision cannot be accepted: not a barrier, already resolved, bad id."""


class InvalidTraceId(UsageError, ValueError):
    """Raised when a trace id is not a str of 1 to 256 characters without NUL or lone surrogates.

    Trace ids are keys in the store, read back by other processes: an int or a name SQLite
    cannot store as UTF-8 text would run and then never load.
    """


class PlanStale(UsageError):
    """Raised when ``ex.rerun(..., plan=plan)`` is given a plan made before its source trace
    got another checkpoint, or with another graph or other node fingerprints: plan again."""


class GraphChangedWarning(UserWarning):
    """Warned when a resumed run's graph differs structurally from the checkpointed one."""


class RetriesExhausted(NodeExecutionFailed):
    """Raised when every attempt a node's ``Retry`` allowed failed.

    ``attempts`` is how many calls were made, ``errors`` the exception of each, in order;
    ``cause`` is the last one.
    """

    def __init__(
        self, message: str, *, node: str, attempts: int, errors: Sequence[BaseException], **kw: Any
    ) -> None:
        super().__init__(message, node=node, cause=errors[-1], **kw)
        self.attempts = attempts
        self.errors = list(errors)


class NodeTimeout(RunError):
    """Raised when one attempt of a node outlived its ``timeout=`` (``idle=False``) or went
    ``heartbeat_timeout=`` seconds without ``ctx.heartbeat()`` (``idle=True``)."""

    def __init__(
        self,
        message: str,
        *,
        node: str,
        timeout: float,
        attempt: int,
        idle: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(message, node=node, **kw)
        self.timeout = timeout
        self.attempt = attempt
        self.idle = idle


class CircuitOpen(RunError):
    """Raised when a node's circuit breaker is open: the node was not called. ``until`` is the
    wall-clock time the cool-down ends."""

    def __init__(self, message: str, *, node: str, until: float, **kw: Any) -> None:
        super().__init__(message, node=node, **kw)
        self.until = until


class NonRetryable(Exception):
    """Raise it from a node (``raise gx.NonRetryable("bad input") from exc``) to fail the
    attempt for good: no ``Retry`` retries it, whatever its ``on=`` says."""


class RetryAfter(Exception):
    """Raise it from a node to ask for the next attempt in ``seconds`` (a ``Retry-After``
    header), instead of the policy's backoff; bounded by the policy's ``max_backoff``. Only a
    node with a ``Retry`` is retried."""

    def __init__(self, seconds: float, message: str | None = None) -> None:
        super().__init__(message or f"retry after {seconds} s")
        self.seconds = float(seconds)
