-- The hub's store on PostgreSQL: the same tables as migrations/hub/sqlite (0001 to 0003 there),
-- in one step. The signed directory, every envelope the hub accepted (for duplicate detection
-- and receipts), the mailboxes of envelopes not yet acknowledged, the append-only event log, the
-- Merkle log over it, and witness cosignatures. Nothing here is personal data: org ids, sizes,
-- times, hashes and sealed bodies only.

CREATE TABLE directory (
    version     BIGINT PRIMARY KEY,
    signed      BYTEA  NOT NULL,
    stored_at   BIGINT NOT NULL
);

CREATE TABLE envelopes (
    envelope_id    BYTEA   PRIMARY KEY,
    header_sha256  BYTEA   NOT NULL,
    from_org       TEXT    NOT NULL,
    to_org         TEXT    NOT NULL,
    kind           INTEGER NOT NULL,
    body_len       BIGINT  NOT NULL,
    received_at    BIGINT  NOT NULL,
    log_index      BIGINT  NOT NULL,
    receipt        BYTEA   NOT NULL,
    acked_at       BIGINT,
    erasure_reason TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX envelopes_by_time ON envelopes (received_at);
CREATE INDEX envelopes_unacked ON envelopes (to_org) WHERE acked_at IS NULL;

CREATE TABLE mailbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    to_org      TEXT   NOT NULL,
    envelope_id BYTEA  NOT NULL UNIQUE REFERENCES envelopes (envelope_id),
    envelope    BYTEA  NOT NULL
);
CREATE INDEX mailbox_by_recipient ON mailbox (to_org, seq);

-- Append-only: rows are inserted, never updated or deleted (the triggers below refuse both).
CREATE TABLE events (
    log_index     BIGINT  PRIMARY KEY,
    event         TEXT    NOT NULL,
    envelope_kind INTEGER NOT NULL,
    from_org      TEXT    NOT NULL,
    to_org        TEXT    NOT NULL,
    envelope_id   BYTEA   NOT NULL,
    body_sha256   BYTEA   NOT NULL,
    at            BIGINT  NOT NULL
);

CREATE TABLE log_hashes (
    idx  BIGINT PRIMARY KEY,
    hash BYTEA  NOT NULL
);

CREATE TABLE checkpoints (
    size BIGINT PRIMARY KEY,
    root BYTEA  NOT NULL,
    note BYTEA  NOT NULL,
    at   BIGINT NOT NULL
);

CREATE TABLE cosignatures (
    size    BIGINT NOT NULL REFERENCES checkpoints (size),
    witness TEXT   NOT NULL,
    line    BYTEA  NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (size, witness)
);

CREATE FUNCTION overstap_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION overstap_append_only();
CREATE TRIGGER log_hashes_append_only BEFORE UPDATE OR DELETE ON log_hashes
    FOR EACH ROW EXECUTE FUNCTION overstap_append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION overstap_append_only();
