-- graphexec SQLite checkpoint store, schema version 4: the event log and cancel requests.

-- Recorded events, one row per batch. data: msgpack array of events (the tagged GraphEvent
-- union) whose event_id runs from first_id to last_id, increasing.
-- A batch written with a checkpoint rides in that checkpoint's row (ev_first, ev_last,
-- events): no other b-tree is written, so the log costs a checkpoint only its bytes. Batches
-- written between checkpoints (on a short timer, so other processes see events promptly, and
-- the last ones after the final checkpoint) go to the events table. A reader takes both,
-- ordered by last id.
ALTER TABLE checkpoints ADD COLUMN ev_first INTEGER;
ALTER TABLE checkpoints ADD COLUMN ev_last INTEGER;
ALTER TABLE checkpoints ADD COLUMN events BLOB;

CREATE TABLE events (
    trace_id TEXT    NOT NULL,
    last_id  INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (trace_id, last_id)
) WITHOUT ROWID;

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
