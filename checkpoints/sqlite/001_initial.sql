-- graphexec SQLite checkpoint store, schema version 1.
-- Applied by SQLiteStore in one transaction, followed by PRAGMA user_version = 1.
-- The record format (what body and snapshot hold) is described in ../FORMAT.md.

-- One row per checkpoint. body: msgpack CheckpointBody; snapshot: msgpack state map, only on a
-- base row (NULL on a delta, and on a base that was demoted when a later base was saved).
-- A rowid table, not WITHOUT ROWID: a delta row of a kilobyte or two then stays inside its
-- b-tree page (an index b-tree spills anything over ~1,000 bytes to a 4 KiB overflow page).
CREATE TABLE checkpoints (
    trace_id          TEXT    NOT NULL,
    seq               INTEGER NOT NULL,
    kind              TEXT    NOT NULL CHECK (kind IN ('base', 'delta')),
    step              INTEGER NOT NULL,
    next_node         TEXT,
    status            TEXT    NOT NULL,
    trigger           TEXT    NOT NULL,
    created_at        REAL    NOT NULL,
    body              BLOB    NOT NULL,
    checksum          INTEGER NOT NULL,
    snapshot          BLOB,
    snapshot_checksum INTEGER,
    PRIMARY KEY (trace_id, seq)
);

-- Finds the latest base at or before a seq (load_chain) and the bases to demote (save).
-- Partial: delta rows, the bulk of the table, are not indexed, so appending one costs nothing here.
CREATE INDEX checkpoints_base ON checkpoints (trace_id, seq) WHERE kind = 'base';

-- The runs index: one row per trace, upserted by every save. barrier_counts, barrier_nodes and
-- parent are JSON (readable with the sqlite3 shell and json_extract).
CREATE TABLE runs (
    trace_id        TEXT    PRIMARY KEY NOT NULL,
    graph_name      TEXT    NOT NULL,
    graph_hash      TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    step            INTEGER NOT NULL,
    next_node       TEXT,
    last_seq        INTEGER NOT NULL,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    pending_barrier TEXT,
    barrier_counts  TEXT    NOT NULL DEFAULT '{}',
    barrier_nodes   TEXT    NOT NULL DEFAULT '[]',
    parent          TEXT
);

-- No secondary index on runs: every save updates status/step/updated_at, and an index over
-- them would cost two more page writes per checkpoint (about 40% of a commit). runs() and
-- prune() scan the table instead, which is quick at the scale of one SQLite file.

-- Decision inbox: decisions submitted for a run, possibly from another process. AUTOINCREMENT
-- so an id is never reused after a prune: a run's decision_cursor stays meaningful.
CREATE TABLE decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id   TEXT    NOT NULL,
    barrier_id TEXT    NOT NULL,
    decision   BLOB    NOT NULL,
    created_at REAL    NOT NULL
);

CREATE INDEX decisions_trace ON decisions (trace_id, id);

-- Who drives a trace: at most one owner, until expires_at (time.time() seconds).
CREATE TABLE leases (
    trace_id   TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
