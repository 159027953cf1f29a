-- graphexec Postgres checkpoint store, schema version 4: runs that need a driver (workers).
-- Applied by PostgresStore like 001 (one transaction, search_path set to the store's schema).

-- When the run next needs a driver that does not hold it now (seconds since the epoch; NULL:
-- not until something happens): written by each save as its writer says (a queued or
-- interrupted run: at once; a waiting run: its barrier's deadline), set to the database clock
-- by a decision for a waiting run, cleared by claim_runs. Older rows stay NULL: claim_runs
-- finds queued, interrupted and running runs by status (runs_status) and orders them by
-- updated_at.
ALTER TABLE runs ADD COLUMN ready_at double precision;

-- Waiting runs whose decision arrived or whose deadline came. Partial, and NULL for the runs
-- being driven: their saves leave it alone and stay heap-only (HOT) updates.
CREATE INDEX runs_ready ON runs (ready_at) WHERE ready_at IS NOT NULL;

-- Every run has a lease row from now on (save_checkpoints below creates it with the trace's
-- first save): claim_runs locks the runs it takes together with their lease rows.
INSERT INTO leases (trace_id, owner, expires_at) SELECT trace_id, '', 0 FROM runs
    ON CONFLICT (trace_id) DO NOTHING;

-- save_checkpoints as before, with the runs row's ready_at (r_ready_at, after r_parent) and
-- the "work" hint. The lines this version adds are marked "-- 004".
DROP FUNCTION save_checkpoints;
CREATE FUNCTION save_checkpoints(
    p_trace text,
    p_seq bigint[], p_kind text[], p_step bigint[], p_next_node text[], p_status text[],
    p_trigger text[], p_created_at double precision[], p_body bytea[], p_checksum bigint[],
    p_snapshot bytea[], p_snapshot_checksum bigint[],
    r_graph_name text, r_graph_hash text, r_status text, r_step bigint, r_next_node text,
    r_last_seq bigint, r_created_at double precision, r_updated_at double precision,
    r_pending_barrier text, r_barrier_counts text, r_barrier_nodes text, r_parent text,
    r_ready_at double precision,  -- 004
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
    ready double precision := r_ready_at;  -- 004
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
    -- 004: decisions that came before the run parked make a waiting run ready at once.
    IF r_status = 'waiting' AND p_decisions_after IS NOT NULL AND EXISTS (
        SELECT 1 FROM decisions AS d WHERE d.trace_id = p_trace AND d.id > p_decisions_after
    ) THEN
        ready := t;
    END IF;
    -- 004: a trace's first save gives it a lease row (free, unless the writer took one), so
    -- claim_runs finds and locks every run in its one statement (leases before runs: the
    -- order every writer locks in).
    IF last IS NULL THEN
        INSERT INTO leases AS l (trace_id, owner, expires_at) VALUES (p_trace, '', 0)
            ON CONFLICT (trace_id) DO NOTHING;
    END IF;
    -- 004: the run can be claimed now: wake the workers (delivered at commit); only on this
    -- transition, never on the saves of a run being driven.
    IF r_status IN ('queued', 'interrupted') OR ready <= t THEN
        PERFORM pg_notify(left('gx_' || current_schema(), 63), 'work');
    END IF;
    INSERT INTO runs AS r (trace_id, graph_name, graph_hash, status, step, next_node, last_seq,
                           created_at, updated_at, pending_barrier, barrier_counts,
                           barrier_nodes, parent, ready_at)
        VALUES (p_trace, r_graph_name, r_graph_hash, r_status, r_step, r_next_node, r_last_seq,
                r_created_at, r_updated_at, r_pending_barrier, r_barrier_counts,
                r_barrier_nodes, r_parent, ready)
        ON CONFLICT (trace_id) DO UPDATE SET graph_name = excluded.graph_name,
            graph_hash = excluded.graph_hash, status = excluded.status, step = excluded.step,
            next_node = excluded.next_node, last_seq = excluded.last_seq,
            created_at = excluded.created_at, updated_at = excluded.updated_at,
            pending_barrier = excluded.pending_barrier,
            barrier_counts = excluded.barrier_counts, barrier_nodes = excluded.barrier_nodes,
            parent = excluded.parent, ready_at = excluded.ready_at;
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
