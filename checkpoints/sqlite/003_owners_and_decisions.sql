-- graphexec SQLite checkpoint store, schema version 3: lease owners with fencing tokens, and
-- decisions a run refused.
-- Applied by SQLiteStore in one transaction, followed by PRAGMA user_version = 3.

-- A decision the run skipped (not a decision, a bare node name, an Edit the typed state
-- refuses, ...): the reason. A refused row no longer counts as its occurrence's decision, so a
-- corrected one can be submitted.
ALTER TABLE decisions ADD COLUMN refused TEXT;

-- Speeds up the one-decision-per-occurrence check of submit_decision.
CREATE INDEX decisions_barrier ON decisions (trace_id, barrier_id);

-- Lease owners: who holds a trace (host, process id and start time, the random owner id per
-- driver) and the fencing token, which grows with every change of owner. Releasing keeps the
-- row (owner '' and expires_at 0) so the next owner's token still grows.
ALTER TABLE leases ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN started TEXT NOT NULL DEFAULT '';
