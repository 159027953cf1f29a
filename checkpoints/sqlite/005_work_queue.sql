-- graphexec SQLite checkpoint store, schema version 5: runs that need a driver (workers).
-- Applied by SQLiteStore in one transaction, followed by PRAGMA user_version = 5.

-- When the run next needs a driver that does not hold it now (time.time() seconds; NULL: not
-- until something happens). Written by each save as its writer says (a queued or interrupted
-- run: at once; a waiting run: its barrier's deadline), set to now by a decision for a
-- waiting run, cleared by claim_runs. Older rows stay NULL: claim_runs finds queued,
-- interrupted and running runs by status and orders them by updated_at.
ALTER TABLE runs ADD COLUMN ready_at REAL;

-- Waiting runs whose decision arrived or whose deadline came. Partial: the runs being driven
-- (ready_at NULL), the bulk of the saves, never touch it.
CREATE INDEX runs_ready ON runs (ready_at) WHERE ready_at IS NOT NULL;
