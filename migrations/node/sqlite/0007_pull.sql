-- Recipients pull. A grant the student let this node fetch (recipient side): the home school's
-- notice, the student's card and signed grant and nothing of the passport. asked_at: when this
-- node last asked for the passport; refused: the home node's answer when it said no. A row goes
-- when the grant is erased (withdrawn, run out).
CREATE TABLE fetchable (
    grant_id     TEXT PRIMARY KEY,
    from_org     TEXT    NOT NULL,
    pseudonym    TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    sections     TEXT    NOT NULL,
    not_before   INTEGER NOT NULL,
    not_after    INTEGER NOT NULL,
    card         BLOB    NOT NULL,
    grant_signed BLOB    NOT NULL,
    noticed_at   INTEGER NOT NULL,
    asked_at     INTEGER,
    refused      TEXT
);

-- Pickup codes (home side): a student's signed single-use code for one grant, kept by the
-- SHA-256 of the code only. used_at and used_by once a pull from the grant's recipient
-- redeemed it.
CREATE TABLE pickup_codes (
    code_sha256 BLOB    PRIMARY KEY,
    grant_id    TEXT    NOT NULL REFERENCES grants (grant_id),
    signed      BLOB    NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
);

-- Wrong pickup codes, a row per try, per member that brought it: five within a quarter of an
-- hour pause that member's codes.
CREATE TABLE pickup_failures (
    id  INTEGER PRIMARY KEY AUTOINCREMENT,
    org TEXT    NOT NULL,
    at  INTEGER NOT NULL
);
CREATE INDEX pickup_failures_by_org ON pickup_failures (org, at);

-- Pulls with a pickup code (recipient side): the school asked, who asked, and the school's
-- refusal when it said no.
CREATE TABLE code_pulls (
    envelope_id BLOB    PRIMARY KEY,
    home_org    TEXT    NOT NULL,
    asked_at    INTEGER NOT NULL,
    asked_by    TEXT    NOT NULL,
    refused     TEXT
);

-- Home side: when the recipient last fetched under a grant (a pull), for the handovers page.
ALTER TABLE grants ADD COLUMN fetched_at INTEGER;
