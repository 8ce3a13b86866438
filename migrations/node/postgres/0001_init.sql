-- A node's store on PostgreSQL: the same tables as migrations/node/sqlite (0001 to 0003 there),
-- in one step. Home-school side: students, their passport versions, their grants, the student's
-- trail, and the outbox. Recipient side: what arrived (only the consented sections), what was
-- erased (with the receipt we signed), and who viewed what. Then what the node knows of the
-- hub's log.
--
-- Flags are integers (0/1) as on SQLite, so one set of SQL serves both. Text that the node
-- sorts by is COLLATE "C": byte order, as SQLite sorts, whatever the server's locale.

CREATE TABLE directory (
    version BIGINT PRIMARY KEY,
    signed  BYTEA  NOT NULL
);

CREATE TABLE students (
    pseudonym     TEXT COLLATE "C" PRIMARY KEY,
    card          BYTEA  NOT NULL,
    registered_by TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE passport_versions (
    pseudonym    TEXT COLLATE "C" NOT NULL REFERENCES students (pseudonym),
    version      BIGINT NOT NULL,
    question_set TEXT   NOT NULL,
    manifest     BYTEA  NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (pseudonym, version)
);

CREATE TABLE passport_sections (
    pseudonym  TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    section_id TEXT COLLATE "C" NOT NULL,
    disclosure BYTEA  NOT NULL,
    PRIMARY KEY (pseudonym, version, section_id),
    FOREIGN KEY (pseudonym, version) REFERENCES passport_versions (pseudonym, version)
);

-- state: active, revoked, expired, erased (erased = the recipient's deletion receipt is here).
CREATE TABLE grants (
    grant_id         TEXT COLLATE "C" PRIMARY KEY,
    pseudonym        TEXT COLLATE "C" NOT NULL REFERENCES students (pseudonym),
    recipient_org    TEXT   NOT NULL,
    purpose          TEXT   NOT NULL,
    sections         TEXT   NOT NULL,
    not_before       BIGINT NOT NULL,
    not_after        BIGINT NOT NULL,
    live             BIGINT NOT NULL,
    -- The passport version when the grant was given; a grant that is not live stays with it.
    passport_version BIGINT NOT NULL,
    signed           BYTEA  NOT NULL,
    state            TEXT   NOT NULL DEFAULT 'active',
    created_at       BIGINT NOT NULL,
    -- The newest version sealed under this grant (live grants follow new versions).
    sent_version     BIGINT,
    sent_at          BIGINT,
    revoked_at       BIGINT,
    erased_at        BIGINT,
    deletion_receipt BYTEA,
    status           TEXT   NOT NULL DEFAULT '',
    status_at        BIGINT,
    views            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX grants_by_student ON grants (pseudonym);

-- Envelopes to push to the hub, in seq order. state: waiting (not sealed yet: its grant is not
-- in force yet), pending, sent, failed (the hub refused it), refused (the recipient refused it),
-- cancelled (its grant was revoked or expired before it left).
CREATE TABLE outbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    envelope_id BYTEA  UNIQUE,
    to_org      TEXT   NOT NULL,
    kind        BIGINT NOT NULL,
    grant_id    TEXT COLLATE "C",
    -- The unsigned Payload, kept so the envelope can be sealed again if the recipient asks.
    payload     BYTEA,
    envelope    BYTEA,
    peer_seq    BIGINT,
    not_before  BIGINT NOT NULL DEFAULT 0,
    version     BIGINT,
    state       TEXT   NOT NULL DEFAULT 'pending',
    attempts    BIGINT NOT NULL DEFAULT 0,
    detail      TEXT   NOT NULL DEFAULT '',
    receipt     BYTEA,
    created_at  BIGINT NOT NULL,
    sent_at     BIGINT
);
CREATE INDEX outbox_by_state ON outbox (state, seq);
CREATE INDEX outbox_by_peer ON outbox (to_org, peer_seq);

-- Per other member: the last sequence number sealed to it, the last one taken in from it without
-- a gap, and how far a resend was asked.
CREATE TABLE peers (
    org           TEXT PRIMARY KEY,
    sent_seq      BIGINT NOT NULL DEFAULT 0,
    received_seq  BIGINT NOT NULL DEFAULT 0,
    requested_seq BIGINT NOT NULL DEFAULT 0
);

-- Envelopes that arrived ahead of a gap, kept (still sealed) until the gap is filled.
CREATE TABLE held (
    from_org    TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    envelope_id BYTEA  NOT NULL,
    envelope    BYTEA  NOT NULL,
    receipt     BYTEA,
    PRIMARY KEY (from_org, seq)
);

-- Every envelope this node has taken in, whatever the outcome: ingest is idempotent by id.
CREATE TABLE processed (
    envelope_id  BYTEA PRIMARY KEY,
    from_org     TEXT   NOT NULL,
    kind         BIGINT NOT NULL,
    outcome      TEXT   NOT NULL,
    detail       TEXT   NOT NULL,
    receipt      BYTEA,
    body_sha256  BYTEA,
    processed_at BIGINT NOT NULL
);

-- Received passports: one row per grant, holding only the sections that grant covers.
CREATE TABLE received (
    grant_id     TEXT COLLATE "C" PRIMARY KEY,
    pseudonym    TEXT   NOT NULL,
    from_org     TEXT   NOT NULL,
    purpose      TEXT   NOT NULL,
    sections     TEXT   NOT NULL,
    not_before   BIGINT NOT NULL,
    not_after    BIGINT NOT NULL,
    live         BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    question_set TEXT   NOT NULL,
    card         BYTEA  NOT NULL,
    manifest     BYTEA  NOT NULL,
    grant_signed BYTEA  NOT NULL,
    envelope_id  BYTEA  NOT NULL,
    received_at  BIGINT NOT NULL,
    status       TEXT   NOT NULL DEFAULT 'ontvangen'
);
CREATE INDEX received_by_expiry ON received (not_after);

CREATE TABLE received_sections (
    grant_id   TEXT COLLATE "C" NOT NULL REFERENCES received (grant_id) ON DELETE CASCADE,
    section_id TEXT COLLATE "C" NOT NULL,
    disclosure BYTEA NOT NULL,
    PRIMARY KEY (grant_id, section_id)
);

-- What was erased here, and the deletion receipt this node signed for it. A package that arrives
-- later under an erased grant is refused.
CREATE TABLE erased (
    grant_id  TEXT PRIMARY KEY,
    from_org  TEXT   NOT NULL,
    reason    TEXT   NOT NULL,
    erased_at BIGINT NOT NULL,
    receipt   BYTEA  NOT NULL
);

-- Who viewed which received passport. Kept after erasure (it holds no student data) so a
-- node can account for its access.
CREATE TABLE access_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grant_id   TEXT   NOT NULL,
    staff_user TEXT   NOT NULL,
    viewed_at  BIGINT NOT NULL
);

-- The student's trail at the home node: every event of every handover, with the hub's receipt
-- for the envelope that carried it and any signed evidence.
CREATE TABLE trail (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pseudonym   TEXT   NOT NULL,
    grant_id    TEXT   NOT NULL,
    org         TEXT   NOT NULL,
    event       TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    detail      TEXT   NOT NULL DEFAULT '',
    envelope_id BYTEA,
    hub_receipt BYTEA,
    evidence    BYTEA
);
CREATE INDEX trail_by_student ON trail (pseudonym, id);

-- What this node knows of the hub's log: the newest checkpoint it verified, the envelopes whose
-- inclusion it has proven, and evidence kept when the hub showed a log that does not add up.
CREATE TABLE log_state (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    size  BIGINT NOT NULL,
    root  BYTEA  NOT NULL,
    note  BYTEA  NOT NULL,
    alarm TEXT
);

CREATE TABLE log_proofs (
    envelope_id BYTEA PRIMARY KEY,
    log_index   BIGINT NOT NULL,
    tree_size   BIGINT NOT NULL,
    proven_at   BIGINT NOT NULL
);

-- Both signed checkpoints (or the checkpoint and the failed proof) that show the hub lied.
CREATE TABLE log_evidence (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason     TEXT   NOT NULL,
    held_note  BYTEA  NOT NULL,
    shown_note BYTEA  NOT NULL,
    at         BIGINT NOT NULL
);

-- Checkpoints other members saw, carried in their envelopes, waiting to be compared with ours.
CREATE TABLE peer_checkpoints (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_org TEXT   NOT NULL,
    note     BYTEA  NOT NULL,
    at       BIGINT NOT NULL,
    checked  BIGINT NOT NULL DEFAULT 0
);

-- Every checkpoint this node verified (the newest 10,000), so `overstap log audit` can check
-- the hub's entries against each of them and say where the history first diverges.
CREATE TABLE log_checkpoints (
    size        BIGINT PRIMARY KEY,
    root        BYTEA  NOT NULL,
    note        BYTEA  NOT NULL,
    verified_at BIGINT NOT NULL
);
