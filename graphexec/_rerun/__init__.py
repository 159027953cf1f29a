"""Re-running a trace from a node with minimal re-execution: node fingerprints
(``fingerprint.py``), the source trace's executions read back (``source.py``), the plan
(``plan.py``) and the reuse rule the run loop asks at every node execution (``reuse.py``)."""
