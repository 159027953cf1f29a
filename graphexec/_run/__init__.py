"""Running a graph, one concern per module:

- ``driver``    the step loop (Driver): what calls what, and when; barriers; the endings
- ``handle``    Run (what a consumer iterates) and RunHandle (decisions, cancel, checkpoint)
- ``result``    GraphResult
- ``position``  where a run stands (step, next node, status, barrier counters, decisions)
- ``step``      one node execution: call, collect deltas (where retry and timeout go)
- ``fanout``    parallel and map nodes: branches in a task group, the failure policy
- ``invoke``    calling a user function (async, inline, worker thread)
- ``routing``   the next node, a pure function of graph, state and directive
- ``decisions`` barrier decisions: offer checks, lookup, merge of stored decisions
- ``recorder``  events, execution log and log lines, free when no one listens

Applying deltas (``_apply.py``), writing checkpoints (``_checkpointer.py``) and keeping the lease
(``_lease.py``) live beside this package: restore and fork use them too.
"""

from .decisions import check_barrier_node, check_edit
from .driver import Driver
from .handle import Run, RunHandle
from .position import Position
from .result import GraphResult

__all__ = (
    "Driver",
    "GraphResult",
    "Position",
    "Run",
    "RunHandle",
    "check_barrier_node",
    "check_edit",
)
