-- graphexec Postgres checkpoint store, schema version 2: the event log and cancel requests
-- (the same data as SQLite's schema 4; see ../FORMAT.md "Event log").
-- Applied by PostgresStore like 001 (one transaction, search_path set to the store's schema).

-- Recorded events, one row per batch: data is a msgpack array of events (the tagged
-- GraphEvent union) whose event_id runs from first_id to last_id, increasing. Batches written
-- with a checkpoint are inserted in the save's transaction; batches written between
-- checkpoints on their own. A reader takes the batches with last_id > after, in order.
CREATE TABLE events (
    trace_id text   NOT NULL,
    last_id  bigint NOT NULL,
    first_id bigint NOT NULL,
    data     bytea  NOT NULL,
    PRIMARY KEY (trace_id, last_id)
);

-- The last event-id segment handed out per trace (one per driver: 1, 2, 3, ...).
CREATE TABLE event_segments (
    trace_id text   PRIMARY KEY,
    segment  bigint NOT NULL
);

-- ex.cancel() from a process that does not drive the run, while a live driver holds the
-- lease: the driver deletes the row when it takes the request.
CREATE TABLE cancel_requests (
    trace_id     text             PRIMARY KEY,
    requested_at double precision NOT NULL
);
