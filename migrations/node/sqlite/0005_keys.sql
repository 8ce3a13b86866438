-- More keys on a student's card, and what waits for a guardian.

-- A link that lets one more key join a student's card, made in the browser that opens it:
-- role 'guardian' (a parent's key: a card for a student under 16 waits for one), 'device' (the
-- student's key on another device of theirs), or 'replace' (a new key after the student lost
-- theirs: every student key on the card is retired). invitation_id names the enrolment a
-- guardian link belongs to while the student has no card yet; pseudonym names the student once
-- they have one. Like an invitation: looked up by the SHA-256 of its token, valid until
-- expires_at, used once; the key is handed in (key) and its short code compared in person
-- before the card names it (used_at). made_by: the staff member, or 'student' for a link a
-- student made on a device that already has a key.
CREATE TABLE key_links (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash    BLOB    NOT NULL UNIQUE,
    link_token    TEXT,
    role          TEXT    NOT NULL,
    invitation_id INTEGER REFERENCES invitations (id),
    pseudonym     TEXT REFERENCES students (pseudonym),
    made_by       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    key           BLOB,
    key_at        INTEGER,
    used_at       INTEGER
);
CREATE INDEX key_links_invitation ON key_links (invitation_id);
CREATE INDEX key_links_pseudonym ON key_links (pseudonym);

-- What a student under 16 signed that counts only once a guardian co-signs it: kind 'passport'
-- (a new version: signed is the manifest, sections the encoded StorePassportRequest with its
-- sections) or 'consent' (signed is the grant). Both carry the student's signature only. A
-- guardian co-signs (the row goes, the version or consent is kept as any other) or declines
-- (declined_at; the student reads it, and the row goes when they sign anew).
CREATE TABLE held_for_guardian (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pseudonym   TEXT    NOT NULL REFERENCES students (pseudonym),
    kind        TEXT    NOT NULL,
    signed      BLOB    NOT NULL,
    sections    BLOB,
    held_at     INTEGER NOT NULL,
    declined_at INTEGER
);
CREATE INDEX held_for_guardian_pseudonym ON held_for_guardian (pseudonym);
