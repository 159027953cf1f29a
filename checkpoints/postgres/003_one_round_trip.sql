-- graphexec Postgres checkpoint store, schema version 3: one round trip per write, and event
-- tails woken by NOTIFY.
-- Applied by PostgresStore like 001 (one transaction, search_path set to the store's schema).
--
-- A round trip to the server costs more than what a save does there (see benches/README.md,
-- "Postgres"), so each write the store makes often is one call of a function here:
-- save_checkpoints now takes the save's event batch in its arguments (it was a separate INSERT,
-- with BEGIN and COMMIT: four round trips), acquire_lease grants a lease and returns the run's
-- row (six round trips before), append_events and request_cancel check the lease and write
-- (four before).

-- Who tails a trace's events from another process (ex.events on a run driven elsewhere): one
-- row per trace and store object (watcher: a random id), its expiry on the database clock,
-- pushed forward while the tail waits. A write that records events for a trace with a live
-- watcher sends NOTIFY; a trace nobody tails sends none (an index probe per write).
CREATE TABLE event_watchers (
    trace_id   text             NOT NULL,
    watcher    text             NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (trace_id, watcher)
);

-- Registering a watcher deletes the expired rows of every trace (tails that went away).
CREATE INDEX event_watchers_expiry ON event_watchers (expires_at);

-- A wake-up hint to every PostgresStore listening on this schema: the channel is gx_<schema>
-- (cut to Postgres's 63-byte identifiers), the payload the topic ('work', 'events:<trace>').
-- A notify sent in a transaction is delivered at its commit, once per distinct payload. The
-- functions below send theirs inline: a call of a function with its own search_path costs a
-- save about a tenth of its server time.
CREATE FUNCTION hint(p_topic text) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_notify(left('gx_' || current_schema(), 63), p_topic);
END
$$;

-- The lease-lost error of every fenced write: SQLSTATE GX003, the lease row and the database
-- clock as a JSON array in DETAIL (the store names the holder from it, by _leases.py's rule).
CREATE FUNCTION lease_lost(held leases, t double precision) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'lease lost' USING ERRCODE = 'GX003', DETAIL = json_build_array(
        held.owner, held.token, held.expires_at, held.host, held.pid, held.started, t)::text;
END
$$;

-- One checkpoint save in one statement, as in 001 (whose comment says what it checks and
-- writes), plus its batch of recorded events (p_ev_first..p_ev_last, p_ev_data; NULL: none),
-- inserted after the lease check, with an events hint (NOTIFY) when someone tails the trace.
-- Compared with 001: the batch rides here; the runs row is updated in place (an upsert's
-- speculative insert also draws an identity value on every save) and inserted only for a new
-- trace; the older bases are looked for only when the batch holds a base.
DROP FUNCTION save_checkpoints(
    text, bigint[], text[], bigint[], text[], text[], text[], double precision[], bytea[],
    bigint[], bytea[], bigint[], text, text, text, bigint, text, bigint, double precision,
    double precision, text, text, text, text, text, bigint, double precision, text, boolean,
    bigint);

CREATE FUNCTION save_checkpoints(
    p_trace text,
    p_seq bigint[], p_kind text[], p_step bigint[], p_next_node text[], p_status text[],
    p_trigger text[], p_created_at double precision[], p_body bytea[], p_checksum bigint[],
    p_snapshot bytea[], p_snapshot_checksum bigint[],
    r_graph_name text, r_graph_hash text, r_status text, r_step bigint, r_next_node text,
    r_last_seq bigint, r_created_at double precision, r_updated_at double precision,
    r_pending_barrier text, r_barrier_counts text, r_barrier_nodes text, r_parent text,
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
    UPDATE runs AS r SET graph_name = r_graph_name, graph_hash = r_graph_hash,
            status = r_status, step = r_step, next_node = r_next_node, last_seq = r_last_seq,
            created_at = r_created_at, updated_at = r_updated_at,
            pending_barrier = r_pending_barrier, barrier_counts = r_barrier_counts,
            barrier_nodes = r_barrier_nodes, parent = r_parent
        WHERE r.trace_id = p_trace;
    IF NOT FOUND THEN
        -- A new trace (two first saves at once: the second fails on the checkpoints key).
        INSERT INTO runs (trace_id, graph_name, graph_hash, status, step, next_node, last_seq,
                          created_at, updated_at, pending_barrier, barrier_counts,
                          barrier_nodes, parent)
            VALUES (p_trace, r_graph_name, r_graph_hash, r_status, r_step, r_next_node,
                    r_last_seq, r_created_at, r_updated_at, r_pending_barrier,
                    r_barrier_counts, r_barrier_nodes, r_parent);
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

-- Take or renew a trace's lease in one statement: the row locked (created free if missing),
-- the grant rule of checkpoint/_leases.py (grant) applied to the cases it decides without
-- looking at processes, the new row written, and the run's row read back with its lease.
-- The rule (the one place it is written is _leases.grant; this mirrors it, and the store
-- contract tests hold every store to it):
--   - the row holds p_owner and p_token: a renewal (same token);
--   - another owner holds it, unexpired, and p_take_over is false: granted = false, nothing
--     written; the store decides in Python (RunLocked, or a holder on this host whose process
--     is gone: it calls again with p_if_owner/p_if_token naming that holder, taken over only
--     if the row still holds it);
--   - p_expect_seq is not the trace's last seq: granted = false (the store raises LeaseLost);
--   - otherwise a new owner: token + 1.
-- Returns the row as found (locked), the database clock and the last seq, then the run's row
-- with its lease after the grant (NULLs for a trace with no run yet).
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
    r_barrier_nodes text, r_parent text, l_owner text, l_token bigint,
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
            r.parent, l.owner, l.token, l.expires_at, l.host, l.pid, l.started
        FROM (SELECT 1) AS one
        LEFT JOIN runs AS r ON r.trace_id = p_trace
        LEFT JOIN leases AS l ON l.trace_id = p_trace;
END
$$;

-- A batch of events recorded between checkpoints, in one statement: the fencing check of
-- _leases.check_append (the row still carries p_token, held by p_owner or released by it;
-- else GX003 as in save_checkpoints), the insert, and the events hint when someone tails.
CREATE FUNCTION append_events(
    p_trace text, p_owner text, p_token bigint, p_first bigint, p_last bigint, p_data bytea
)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    t double precision := extract(epoch FROM clock_timestamp());
    held leases%ROWTYPE;
BEGIN
    SELECT * INTO held FROM leases AS l WHERE l.trace_id = p_trace FOR UPDATE;
    IF NOT FOUND OR p_token <= 0 OR held.token <> p_token OR held.owner NOT IN (p_owner, '')
    THEN
        PERFORM lease_lost(held, t);
    END IF;
    INSERT INTO events (trace_id, last_id, first_id, data)
        VALUES (p_trace, p_last, p_first, p_data);
    IF EXISTS (SELECT 1 FROM event_watchers AS w
               WHERE w.trace_id = p_trace AND w.expires_at > t) THEN
        PERFORM pg_notify(left('gx_' || current_schema(), 63), 'events:' || p_trace);
    END IF;
END
$$;

-- ex.cancel() for a run driven elsewhere, in one statement: recorded (true) while a live driver
-- holds the lease (_leases.LeaseRow.live); false when none does (no owner, or expired). When
-- the holder runs on the caller's host (p_host) in another process, only the caller can tell
-- whether that process is alive (/proc): NULL, nothing written, and the store calls again with
-- p_if_owner/p_if_token naming the holder it found alive (recorded if the row still holds it).
-- Returns the row as found and the database clock.
CREATE FUNCTION request_cancel(
    p_trace text, p_host text, p_pid bigint, p_if_owner text, p_if_token bigint,
    p_requested_at double precision
)
RETURNS TABLE (
    recorded boolean, owner text, token bigint, expires_at double precision, host text,
    pid bigint, started text, t double precision
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    now_t double precision := extract(epoch FROM clock_timestamp());
    held leases%ROWTYPE;
    answer boolean;
BEGIN
    SELECT * INTO held FROM leases AS l WHERE l.trace_id = p_trace FOR UPDATE;
    IF NOT FOUND OR held.owner = '' OR held.expires_at <= now_t THEN
        answer := false;
    ELSIF held.host = p_host AND held.pid > 0 AND held.pid <> p_pid
          AND (p_if_owner IS NULL OR held.owner <> p_if_owner OR held.token <> p_if_token) THEN
        answer := NULL;  -- a process on the caller's host: the caller looks whether it lives
    ELSE
        answer := true;
        INSERT INTO cancel_requests AS c (trace_id, requested_at) VALUES (p_trace, p_requested_at)
            ON CONFLICT (trace_id) DO UPDATE SET requested_at = excluded.requested_at;
    END IF;
    RETURN QUERY SELECT answer, held.owner, held.token, held.expires_at, held.host, held.pid,
        held.started, now_t;
END
$$;
