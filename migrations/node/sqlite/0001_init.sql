-- A node's own store. Home-school side: students, their passport versions, their grants, the
-- student's trail, and the outbox. Recipient side: what arrived (only the consented sections),
-- what was erased (with the receipt we signed), and who viewed what.

CREATE TABLE directory (
    version INTEGER PRIMARY KEY,
    signed  BLOB NOT NULL
);

CREATE TABLE students (
    pseudonym     TEXT PRIMARY KEY,
    card          BLOB    NOT NULL,
    registered_by TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE passport_versions (
    pseudonym    TEXT    NOT NULL REFERENCES students (pseudonym),
    version      INTEGER NOT NULL,
    question_set TEXT    NOT NULL,
    manifest     BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (pseudonym, version)
);

CREATE TABLE passport_sections (
    pseudonym  TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    section_id TEXT    NOT NULL,
    disclosure BLOB    NOT NULL,
    PRIMARY KEY (pseudonym, version, section_id),
    FOREIGN KEY (pseudonym, version) REFERENCES passport_versions (pseudonym, version)
);

-- state: active, revoked, expired, erased (erased = the recipient's deletion receipt is here).
CREATE TABLE grants (
    grant_id         TEXT PRIMARY KEY,
    pseudonym        TEXT    NOT NULL REFERENCES students (pseudonym),
    recipient_org    TEXT    NOT NULL,
    purpose          TEXT    NOT NULL,
    sections         TEXT    NOT NULL,
    not_before       INTEGER NOT NULL,
    not_after        INTEGER NOT NULL,
    live             INTEGER NOT NULL,
    -- The passport version when the grant was given; a grant that is not live stays with it.
    passport_version INTEGER NOT NULL,
    signed           BLOB    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'active',
    created_at       INTEGER NOT NULL,
    -- The newest version sealed under this grant (live grants follow new versions).
    sent_version     INTEGER,
    sent_at          INTEGER,
    revoked_at       INTEGER,
    erased_at        INTEGER,
    deletion_receipt BLOB,
    status           TEXT    NOT NULL DEFAULT '',
    status_at        INTEGER,
    views            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX grants_by_student ON grants (pseudonym);

-- Envelopes to push to the hub, in seq order. state: waiting (not sealed yet: its grant is not
-- in force yet), pending, sent, failed (the hub refused it), refused (the recipient refused it),
-- cancelled (its grant was revoked or expired before it left).
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id BLOB    UNIQUE,
    to_org      TEXT    NOT NULL,
    kind        INTEGER NOT NULL,
    grant_id    TEXT,
    -- The unsigned Payload, kept so the envelope can be sealed again if the recipient asks.
    payload     BLOB,
    envelope    BLOB,
    peer_seq    INTEGER,
    not_before  INTEGER NOT NULL DEFAULT 0,
    version     INTEGER,
    state       TEXT    NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    detail      TEXT    NOT NULL DEFAULT '',
    receipt     BLOB,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX outbox_by_state ON outbox (state, seq);
CREATE INDEX outbox_by_peer ON outbox (to_org, peer_seq);

-- Per other member: the last sequence number sealed to it, the last one taken in from it without
-- a gap, and how far a resend was asked.
CREATE TABLE peers (
    org           TEXT PRIMARY KEY,
    sent_seq      INTEGER NOT NULL DEFAULT 0,
    received_seq  INTEGER NOT NULL DEFAULT 0,
    requested_seq INTEGER NOT NULL DEFAULT 0
);

-- Envelopes that arrived ahead of a gap, kept (still sealed) until the gap is filled.
CREATE TABLE held (
    from_org    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    envelope_id BLOB    NOT NULL,
    envelope    BLOB    NOT NULL,
    receipt     BLOB,
    PRIMARY KEY (from_org, seq)
);

-- Every envelope this node has taken in, whatever the outcome: ingest is idempotent by id.
CREATE TABLE processed (
    envelope_id  BLOB PRIMARY KEY,
    from_org     TEXT    NOT NULL,
    kind         INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
        receipt      BLOB,
    body_sha256  BLOB,
    processed_at INTEGER NOT NULL
);

-- Received passports: one row per grant, holding only the sections that grant covers.
CREATE TABLE received (
    grant_id     TEXT PRIMARY KEY,
    pseudonym    TEXT    NOT NULL,
    from_org     TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    sections     TEXT    NOT NULL,
    not_before   INTEGER NOT NULL,
    not_after    INTEGER NOT NULL,
    live         INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    question_set TEXT    NOT NULL,
    card         BLOB    NOT NULL,
    manifest     BLOB    NOT NULL,
    grant_signed BLOB    NOT NULL,
    envelope_id  BLOB    NOT NULL,
    received_at  INTEGER NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'ontvangen'
);
CREATE INDEX received_by_expiry ON received (not_after);

CREATE TABLE received_sections (
    grant_id   TEXT NOT NULL REFERENCES received (grant_id) ON DELETE CASCADE,
    section_id TEXT NOT NULL,
    disclosure BLOB NOT NULL,
    PRIMARY KEY (grant_id, section_id)
);

-- What was erased here, and the deletion receipt this node signed for it. A package that arrives
-- later under an erased grant is refused.
CREATE TABLE erased (
    grant_id  TEXT PRIMARY KEY,
    from_org  TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    erased_at INTEGER NOT NULL,
    receipt   BLOB    NOT NULL
);

-- Who viewed which received passport. Kept after erasure (it holds no student data) so a
-- node can account for its access.
CREATE TABLE access_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    grant_id   TEXT    NOT NULL,
    staff_user TEXT    NOT NULL,
    viewed_at  INTEGER NOT NULL
);

-- The student's trail at the home node: every event of every handover, with the hub's receipt
-- for the envelope that carried it and any signed evidence.
CREATE TABLE trail (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pseudonym   TEXT    NOT NULL,
    grant_id    TEXT    NOT NULL,
    org         TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '',
    envelope_id BLOB,
    hub_receipt BLOB,
    evidence    BLOB
);
CREATE INDEX trail_by_student ON trail (pseudonym, id);
