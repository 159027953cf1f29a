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
CREATE TABLE decisions (
    id         bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trace_id   text             NOT NULL,
    barrier_id text             NOT NULL,
    decision   bytea            NOT NULL,
    created_at double precision NOT NULL
);

CREATE INDEX decisions_trace ON decisions (trace_id, id);

-- Who drives a trace: at most one owner, until expires_at (seconds since the epoch, on the
-- database server's clock, so workers on several machines agree on when a lease expired).
CREATE TABLE leases (
    trace_id   text             PRIMARY KEY,
    owner      text             NOT NULL,
    expires_at double precision NOT NULL
);

-- Takes a free or expired lease, or renews one's own (with lazy, only once half of the ttl has
-- gone by: a renewal is a row write); raises SQLSTATE GX001 with the expiry in DETAIL if
-- another owner holds an unexpired one. Returns the database clock's time. One call, so a
-- save checks its lease in the round trip that reads the trace's last seq.
CREATE FUNCTION take_lease(p_trace text, p_owner text, p_ttl double precision, p_lazy boolean)
RETURNS double precision
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    t double precision := extract(epoch FROM clock_timestamp());
    held_by text;
    held_until double precision;
BEGIN
    SELECT owner, expires_at INTO held_by, held_until FROM leases
        WHERE trace_id = p_trace FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO leases (trace_id, owner, expires_at) VALUES (p_trace, p_owner, t + p_ttl)
            ON CONFLICT (trace_id) DO NOTHING;
        IF FOUND THEN
            RETURN t;
        END IF;
        -- Another transaction inserted it first: read what it wrote.
        SELECT owner, expires_at INTO held_by, held_until FROM leases
            WHERE trace_id = p_trace FOR UPDATE;
        IF NOT FOUND THEN  -- and released since: the caller tries again later
            RAISE EXCEPTION 'lease contended'
                USING ERRCODE = 'GX001', DETAIL = t::text || ' ' || t::text;
        END IF;
    END IF;
    IF held_by <> p_owner AND held_until > t THEN
        RAISE EXCEPTION 'lease held by another owner'
            USING ERRCODE = 'GX001', DETAIL = held_until::text || ' ' || t::text;
    END IF;
    IF NOT (p_lazy AND held_by = p_owner AND held_until - t > p_ttl / 2) THEN
        UPDATE leases SET owner = p_owner, expires_at = t + p_ttl WHERE trace_id = p_trace;
    END IF;
    RETURN t;
END
$$;
