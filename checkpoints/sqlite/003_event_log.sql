-- graphexec SQLite checkpoint store, schema version 3: the event log and cancel requests.

-- Recorded events, one row per batch (written with a checkpoint's transaction, or on their own
-- between checkpoints). data: msgpack array of events (the tagged GraphEvent union) whose
-- event_id runs from first_id to last_id. One row per batch, not per event: a checkpoint then
-- costs one more row insert, whatever the number of events since the previous one.
CREATE TABLE events (
    trace_id TEXT    NOT NULL,
    last_id  INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (trace_id, last_id)
);

-- The last event-id segment handed out per trace: each driver of a trace takes the next one,
-- so its event ids ((segment << 32) | n) never reuse ids a crashed driver handed out.
CREATE TABLE event_segments (
    trace_id TEXT    PRIMARY KEY NOT NULL,
    segment  INTEGER NOT NULL
) WITHOUT ROWID;

-- ex.cancel() from a process that does not drive the run: the driver takes the request at its
-- next poll.
CREATE TABLE cancel_requests (
    trace_id     TEXT PRIMARY KEY NOT NULL,
    requested_at REAL NOT NULL
) WITHOUT ROWID;
