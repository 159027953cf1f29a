-- graphexec Postgres checkpoint store, schema version 1.
-- Applied by PostgresStore in one transaction, under a transaction-scoped advisory lock, with
-- search_path set (SET LOCAL) to the store's schema; the version is then recorded in
-- <schema>.schema_version. The record format (what body and snapshot hold) is ../FORMAT.md:
-- the same bytes as in SQLite.

-- One row per checkpoint. body: msgpack CheckpointBody; snapshot: msgpack state map, only on a
-- base row (NULL on a delta, and on a base demoted when a later base was saved). Large blobs
-- are compressed by Postgres itself (TOAST), so the bytes stored are the bytes encoded.
CREATE TABLE checkpoints (
    trace_id          text             NOT NULL,
    seq               bigint           NOT NULL,
    kind              text             NOT NULL CHECK (kind IN ('base', 'delta')),
    step              bigint           NOT NULL,
    next_node         text,
    status            text             NOT NULL,
    trigger           text             NOT NULL,
    created_at        double precision NOT NULL,
    body              bytea            NOT NULL,
    checksum          bigint           NOT NULL,
    snapshot          bytea,
    snapshot_checksum bigint,
    PRIMARY KEY (trace_id, seq)
);

-- Finds the latest base at or before a seq (load_chain) and the bases to demote (save).
CREATE INDEX checkpoints_base ON checkpoints (trace_id, seq) WHERE kind = 'base';

-- The runs index: one row per trace, upserted by every save. barrier_counts, barrier_nodes and
-- parent are JSON text (the same text as SQLite's columns). id orders runs updated at the same
-- instant by first insertion, as SQLite's rowid does. fillfactor leaves room on each page so
-- the update every save makes stays a heap-only (HOT) update when the status does not change.
CREATE TABLE runs (
    trace_id        text             PRIMARY KEY,
    id              bigint           GENERATED ALWAYS AS IDENTITY,
    graph_name      text             NOT NULL,
    graph_hash      text             NOT NULL,
    status          text             NOT NULL,
    step            bigint           NOT NULL,
    next_node       text,
    last_seq        bigint           NOT NULL,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    pending_barrier text,
    barrier_counts  text             NOT NULL DEFAULT '{}',
    barrier_nodes   text             NOT NULL DEFAULT '[]',
    parent          text
) WITH (fillfactor = 80);

-- Many workers share one database: runs(status=...) and the scans for runs that need a driver
-- read by status. updated_at is not indexed, so most saves stay HOT updates.
CREATE INDEX runs_status ON runs (status);

-- Decision inbox. Ids come from an identity (never reused after a prune). submit_decision
-- locks the run's row before it inserts, so the ids of one trace commit in increasing order
-- and a reader's cursor never skips a decision committed late.
-- refused: why the run skipped a decision (not a decision, a bare node name, an Edit the typed
-- state refuses, ...); a refused row no longer counts as its occurrence's decision.
CREATE TABLE decisions (
    id         bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trace_id   text             NOT NULL,
    barrier_id text             NOT NULL,
    decision   bytea            NOT NULL,
    created_at double precision NOT NULL,
    refused    text
);

CREATE INDEX decisions_trace ON decisions (trace_id, id);
-- The one-decision-per-occurrence check of submit_decision.
CREATE INDEX decisions_barrier ON decisions (trace_id, barrier_id);

-- Who drives a trace: the owner (a random id per driver, '' once released), the fencing token
-- (grows with every change of owner; a released row keeps it, so the next owner's grows), the
-- expiry (seconds since the epoch on the database server's clock, so workers on several
-- machines agree on when a lease ran out), and the holder's host, pid and process start time
-- (a process on the same host can tell that the holder is gone). Granting is decided in Python
-- (checkpoint/_leases.py, shared by every store) on the row read FOR UPDATE.
CREATE TABLE leases (
    trace_id   text             PRIMARY KEY,
    owner      text             NOT NULL,
    expires_at double precision NOT NULL,
    token      bigint           NOT NULL DEFAULT 0,
    host       text             NOT NULL DEFAULT '',
    pid        bigint           NOT NULL DEFAULT 0,
    started    text             NOT NULL DEFAULT ''
);

-- One checkpoint save in one statement (one round trip, one transaction): the fencing check
-- (the lease row must still hold p_owner and p_token, else SQLSTATE GX003 with the row and
-- the clock as a JSON array in DETAIL) and the renewal once half the ttl has gone by, refuse rows that do not follow the trace's last seq (SQLSTATE GX002,
-- the last seq in DETAIL), demote older bases as SQLite does, append the rows, upsert the runs
-- row, release the lease on a final save, and return the decisions after p_decisions_after.
-- The rows come as one array per column. p_async_commit turns synchronous_commit off for this
-- transaction only: the commit survives a killed client, not a crash of the server itself.
CREATE FUNCTION save_checkpoints(
    p_trace text,
    p_seq bigint[], p_kind text[], p_step bigint[], p_next_node text[], p_status text[],
    p_trigger text[], p_created_at double precision[], p_body bytea[], p_checksum bigint[],
    p_snapshot bytea[], p_snapshot_checksum bigint[],
    r_graph_name text, r_graph_hash text, r_status text, r_step bigint, r_next_node text,
    r_last_seq bigint, r_created_at double precision, r_updated_at double precision,
    r_pending_barrier text, r_barrier_counts text, r_barrier_nodes text, r_parent text,
    p_owner text, p_token bigint, p_ttl double precision, p_release_owner text,
    p_async_commit boolean, p_decisions_after bigint
)
RETURNS TABLE (id bigint, barrier_id text, decision bytea, created_at double precision)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    t double precision := extract(epoch FROM clock_timestamp());
    held leases%ROWTYPE;
    last bigint;
    bases integer := 0;
BEGIN
    IF p_async_commit THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF p_owner IS NOT NULL THEN
        SELECT * INTO held FROM leases AS l WHERE l.trace_id = p_trace FOR UPDATE;
        IF NOT FOUND OR held.owner <> p_owner OR held.token <> p_token THEN
            RAISE EXCEPTION 'lease lost' USING ERRCODE = 'GX003', DETAIL = json_build_array(
                held.owner, held.token, held.expires_at, held.host, held.pid, held.started, t
            )::text;
        END IF;
        IF held.expires_at - t <= p_ttl / 2 THEN
            UPDATE leases AS l SET expires_at = t + p_ttl WHERE l.trace_id = p_trace;
        END IF;
    END IF;
    SELECT max(c.seq) INTO last FROM checkpoints AS c WHERE c.trace_id = p_trace;
    IF last IS NOT NULL AND cardinality(p_seq) > 0 AND p_seq[1] <= last THEN
        RAISE EXCEPTION 'checkpoint seq does not follow the last one'
            USING ERRCODE = 'GX002', DETAIL = last::text;
    END IF;
    SELECT count(*) INTO bases FROM unnest(p_kind) AS k WHERE k = 'base';
    IF bases > 0 THEN
        -- Before the batch: every base but the first loses its snapshot.
        UPDATE checkpoints AS c SET kind = 'delta', snapshot = NULL, snapshot_checksum = NULL
            WHERE c.trace_id = p_trace AND c.kind = 'base' AND c.seq > (
                SELECT min(b.seq) FROM checkpoints AS b
                WHERE b.trace_id = p_trace AND b.kind = 'base');
    END IF;
    INSERT INTO checkpoints (trace_id, seq, kind, step, next_node, status, trigger, created_at,
                             body, checksum, snapshot, snapshot_checksum)
        SELECT p_trace, u.* FROM unnest(p_seq, p_kind, p_step, p_next_node, p_status,
            p_trigger, p_created_at, p_body, p_checksum, p_snapshot, p_snapshot_checksum) AS u;
    IF bases > 1 THEN
        -- Several bases in one batch: every base between the first and the newest.
        UPDATE checkpoints AS c SET kind = 'delta', snapshot = NULL, snapshot_checksum = NULL
            WHERE c.trace_id = p_trace AND c.kind = 'base'
            AND c.seq > (SELECT min(b.seq) FROM checkpoints AS b
                         WHERE b.trace_id = p_trace AND b.kind = 'base')
            AND c.seq < (SELECT max(b.seq) FROM checkpoints AS b
                         WHERE b.trace_id = p_trace AND b.kind = 'base');
    END IF;
    INSERT INTO runs AS r (trace_id, graph_name, graph_hash, status, step, next_node, last_seq,
                           created_at, updated_at, pending_barrier, barrier_counts,
                           barrier_nodes, parent)
        VALUES (p_trace, r_graph_name, r_graph_hash, r_status, r_step, r_next_node, r_last_seq,
                r_created_at, r_updated_at, r_pending_barrier, r_barrier_counts,
                r_barrier_nodes, r_parent)
        ON CONFLICT (trace_id) DO UPDATE SET graph_name = excluded.graph_name,
            graph_hash = excluded.graph_hash, status = excluded.status, step = excluded.step,
            next_node = excluded.next_node, last_seq = excluded.last_seq,
            created_at = excluded.created_at, updated_at = excluded.updated_at,
            pending_barrier = excluded.pending_barrier,
            barrier_counts = excluded.barrier_counts, barrier_nodes = excluded.barrier_nodes,
            parent = excluded.parent;
    IF p_release_owner IS NOT NULL THEN
        -- The row and its token stay: the next owner's token grows.
        UPDATE leases AS l SET owner = '', expires_at = 0
            WHERE l.trace_id = p_trace AND l.owner = p_release_owner;
    END IF;
    IF p_decisions_after IS NOT NULL THEN
        RETURN QUERY SELECT d.id, d.barrier_id, d.decision, d.created_at FROM decisions AS d
            WHERE d.trace_id = p_trace AND d.id > p_decisions_after ORDER BY d.id;
    END IF;
END
$$;
