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

-- The leases held (a few: the runs being driven now), by holder: claim_runs asks which
-- processes of its host hold leases, to take over the runs of those that are gone. Renewals
-- change expires_at only, so they stay heap-only updates.
CREATE INDEX leases_held ON leases (host, pid, started) WHERE owner <> '';

-- Every run has a lease row from now on (save_checkpoints below creates it with the trace's
-- first save): claim_runs locks the runs it takes together with their lease rows.
INSERT INTO leases (trace_id, owner, expires_at) SELECT trace_id, '', 0 FROM runs
    ON CONFLICT (trace_id) DO NOTHING;

-- save_checkpoints and acquire_lease as in 003 (whose comments say what they do), with the
-- runs row's ready_at: save_checkpoints takes it (r_ready_at, after r_parent), makes a waiting
-- run whose decisions came first ready, gives a new trace its lease row and sends the "work"
-- hint; acquire_lease returns it with the run's row. The lines this version adds are marked
-- "004".
DROP FUNCTION save_checkpoints;
DROP FUNCTION acquire_lease;

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
    p_async_commit boolean, p_decisions_after bigint,
    p_ev_first bigint, p_ev_last bigint, p_ev_data bytea
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
    bases integer;
    ready double precision := r_ready_at;  -- 004
BEGIN
    IF p_async_commit THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF p_owner IS NOT NULL THEN
        SELECT * INTO held FROM leases AS l WHERE l.trace_id = p_trace FOR UPDATE;
        IF NOT FOUND OR held.owner <> p_owner OR held.token <> p_token THEN
            PERFORM lease_lost(held, t);
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
    bases := cardinality(array_positions(p_kind, 'base'));
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
    UPDATE runs AS r SET graph_name = r_graph_name, graph_hash = r_graph_hash,
            status = r_status, step = r_step, next_node = r_next_node, last_seq = r_last_seq,
            created_at = r_created_at, updated_at = r_updated_at,
            pending_barrier = r_pending_barrier, barrier_counts = r_barrier_counts,
            barrier_nodes = r_barrier_nodes, parent = r_parent, ready_at = ready  -- 004
        WHERE r.trace_id = p_trace;
    IF NOT FOUND THEN
        -- A new trace (two first saves at once: the second fails on the checkpoints key).
        -- 004: with a lease row (free, unless the writer took one), so claim_runs finds and
        -- locks every run in its one statement (leases before runs: the order writers lock).
        INSERT INTO leases AS l (trace_id, owner, expires_at) VALUES (p_trace, '', 0)
            ON CONFLICT (trace_id) DO NOTHING;
        INSERT INTO runs (trace_id, graph_name, graph_hash, status, step, next_node, last_seq,
                          created_at, updated_at, pending_barrier, barrier_counts,
                          barrier_nodes, parent, ready_at)
            VALUES (p_trace, r_graph_name, r_graph_hash, r_status, r_step, r_next_node,
                    r_last_seq, r_created_at, r_updated_at, r_pending_barrier,
                    r_barrier_counts, r_barrier_nodes, r_parent, ready);
    END IF;
    -- 004: the run can be claimed now: wake the workers (delivered at commit); only on this
    -- transition, never on the saves of a run being driven.
    IF r_status IN ('queued', 'interrupted') OR ready <= t THEN
        PERFORM pg_notify(left('gx_' || current_schema(), 63), 'work');
    END IF;
    IF p_ev_data IS NOT NULL THEN
        INSERT INTO events (trace_id, last_id, first_id, data)
            VALUES (p_trace, p_ev_last, p_ev_first, p_ev_data);
        IF EXISTS (SELECT 1 FROM event_watchers AS w
                   WHERE w.trace_id = p_trace AND w.expires_at > t) THEN
            PERFORM pg_notify(left('gx_' || current_schema(), 63), 'events:' || p_trace);
        END IF;
    END IF;
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

CREATE FUNCTION acquire_lease(
    p_trace text, p_owner text, p_token bigint, p_ttl double precision,
    p_host text, p_pid bigint, p_started text,
    p_take_over boolean, p_expect_seq bigint, p_if_owner text, p_if_token bigint
)
RETURNS TABLE (
    granted boolean, owner text, token bigint, expires_at double precision, host text,
    pid bigint, started text, t double precision, last_seq bigint,
    r_trace_id text, r_graph_name text, r_graph_hash text, r_status text, r_step bigint,
    r_next_node text, r_last_seq bigint, r_created_at double precision,
    r_updated_at double precision, r_pending_barrier text, r_barrier_counts text,
    r_barrier_nodes text, r_parent text, r_ready_at double precision,  -- 004
    l_owner text, l_token bigint,
    l_expires_at double precision, l_host text, l_pid bigint, l_started text
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    held leases%ROWTYPE;
    now_t double precision;
    last bigint;
    new_token bigint;
BEGIN
    SELECT * INTO held FROM leases AS l WHERE l.trace_id = p_trace FOR UPDATE;
    IF NOT FOUND THEN
        -- Never leased: a free row (owner '', token 0) to lock, so a grant always has one.
        INSERT INTO leases (trace_id, owner, expires_at) VALUES (p_trace, '', 0)
            ON CONFLICT (trace_id) DO NOTHING;
        SELECT * INTO held FROM leases AS l WHERE l.trace_id = p_trace FOR UPDATE;
    END IF;
    now_t := extract(epoch FROM clock_timestamp());  -- once the lock is held
    IF p_expect_seq IS NOT NULL THEN
        SELECT max(c.seq) INTO last FROM checkpoints AS c WHERE c.trace_id = p_trace;
    END IF;
    IF held.owner = p_owner AND held.token = p_token THEN
        new_token := held.token;
    ELSIF held.owner <> p_owner AND held.owner <> '' AND held.expires_at > now_t
          AND NOT p_take_over
          AND (p_if_owner IS NULL OR held.owner <> p_if_owner OR held.token <> p_if_token) THEN
        new_token := NULL;  -- held by another owner: the store decides
    ELSIF p_expect_seq IS NOT NULL AND last IS DISTINCT FROM p_expect_seq THEN
        new_token := NULL;  -- driven elsewhere meanwhile: LeaseLost
    ELSE
        new_token := held.token + 1;
    END IF;
    IF new_token IS NOT NULL THEN
        UPDATE leases AS l SET owner = p_owner, token = new_token, expires_at = now_t + p_ttl,
                host = p_host, pid = p_pid, started = p_started
            WHERE l.trace_id = p_trace;
    END IF;
    RETURN QUERY SELECT new_token IS NOT NULL, held.owner, held.token, held.expires_at,
            held.host, held.pid, held.started, now_t, last,
            r.trace_id, r.graph_name, r.graph_hash, r.status, r.step, r.next_node, r.last_seq,
            r.created_at, r.updated_at, r.pending_barrier, r.barrier_counts, r.barrier_nodes,
            r.parent, r.ready_at, l.owner, l.token, l.expires_at, l.host, l.pid, l.started
        FROM (SELECT 1) AS one
        LEFT JOIN runs AS r ON r.trace_id = p_trace
        LEFT JOIN leases AS l ON l.trace_id = p_trace;
END
$$;
