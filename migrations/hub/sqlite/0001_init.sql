-- The hub's store: the signed directory, every envelope it accepted (for duplicate detection and
-- receipts), the mailboxes of envelopes not yet acknowledged, and the append-only event log.
-- Nothing here is personal data: org ids, sizes, times, hashes and sealed bodies only.

CREATE TABLE directory (
    version     INTEGER PRIMARY KEY,
    signed      BLOB    NOT NULL,
    stored_at   INTEGER NOT NULL
);

CREATE TABLE envelopes (
    envelope_id   BLOB    PRIMARY KEY,
    header_sha256 BLOB    NOT NULL,
    from_org      TEXT    NOT NULL,
    to_org        TEXT    NOT NULL,
    kind          INTEGER NOT NULL,
    body_len      INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    log_index     INTEGER NOT NULL,
    receipt       BLOB    NOT NULL,
    acked_at      INTEGER
);

CREATE TABLE mailbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    to_org      TEXT    NOT NULL,
    envelope_id BLOB    NOT NULL UNIQUE REFERENCES envelopes (envelope_id),
    envelope    BLOB    NOT NULL
);
CREATE INDEX mailbox_by_recipient ON mailbox (to_org, seq);

-- Append-only: rows are inserted, never updated or deleted (the triggers below refuse both).
CREATE TABLE events (
    log_index     INTEGER PRIMARY KEY,
    event         TEXT    NOT NULL,
    envelope_kind INTEGER NOT NULL,
    from_org      TEXT    NOT NULL,
    to_org        TEXT    NOT NULL,
    envelope_id   BLOB    NOT NULL,
    body_sha256   BLOB    NOT NULL,
    at            INTEGER NOT NULL
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
