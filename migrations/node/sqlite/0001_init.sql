-- A node's own store. Home-school side: students, their passport versions, their grants, and the
-- outbox. Recipient side: what arrived (only the consented sections), and who viewed it.

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

CREATE TABLE grants (
    grant_id      TEXT PRIMARY KEY,
    pseudonym     TEXT    NOT NULL REFERENCES students (pseudonym),
    recipient_org TEXT    NOT NULL,
    purpose       TEXT    NOT NULL,
    sections      TEXT    NOT NULL,
    not_before    INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    live          INTEGER NOT NULL,
    signed        BLOB    NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'active',
    created_at    INTEGER NOT NULL
);

-- Envelopes to push to the hub, in seq order.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id BLOB    NOT NULL UNIQUE,
    to_org      TEXT    NOT NULL,
    kind        INTEGER NOT NULL,
    grant_id    TEXT,
    envelope    BLOB    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    detail      TEXT    NOT NULL DEFAULT '',
    receipt     BLOB,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX outbox_pending ON outbox (state, seq);

-- Every envelope this node has taken in, whatever the outcome: ingest is idempotent by id.
CREATE TABLE processed (
    envelope_id  BLOB PRIMARY KEY,
    from_org     TEXT    NOT NULL,
    kind         INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    receipt      BLOB,
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

CREATE TABLE received_sections (
    grant_id   TEXT NOT NULL REFERENCES received (grant_id) ON DELETE CASCADE,
    section_id TEXT NOT NULL,
    disclosure BLOB NOT NULL,
    PRIMARY KEY (grant_id, section_id)
);

CREATE TABLE access_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    grant_id   TEXT    NOT NULL,
    staff_user TEXT    NOT NULL,
    viewed_at  INTEGER NOT NULL
);
