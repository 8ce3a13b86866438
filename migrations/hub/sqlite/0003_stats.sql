-- For the coordinators' statistics: why a deletion receipt was sent (from its header; empty for
-- every other envelope), and an index to count envelopes by the time the hub accepted them.
ALTER TABLE envelopes ADD COLUMN erasure_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX envelopes_by_time ON envelopes (received_at);
CREATE INDEX envelopes_unacked ON envelopes (to_org) WHERE acked_at IS NULL;
