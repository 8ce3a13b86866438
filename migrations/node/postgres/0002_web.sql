-- The people at a home node and the web app's own state. Names, classes and mentors live only
-- here: never in an envelope, at the hub or in the log.

-- Staff accounts of the web app: the password as an argon2id PHC string, never the password.
-- role: mentor, decaan or admin. display_name is what students and parents read ("Meneer De
-- Vries"); username is what the staff member signs in with.
CREATE TABLE staff (
    username      TEXT PRIMARY KEY,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Signed-in browsers. Only the SHA-256 of the session id is kept, so a copy of this table
-- opens no session. who: a staff username; role: the staff member's role.
CREATE TABLE web_sessions (
    id_hash    BYTEA PRIMARY KEY,
    who        TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    csrf       TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- A mentor's invitation of a student: a one-time link (looked up by its SHA-256), valid until
-- expires_at. The student's browser makes the key and hands in its public half (student_key);
-- the mentor compares the short code derived from it in person, and then the node issues the
-- card (pseudonym set, used_at set). A link is used once. link_token is the link's token itself,
-- kept only until a key is handed in, so the mentor's page can show the link and its QR code.
CREATE TABLE invitations (
    id          BIGSERIAL PRIMARY KEY,
    token_hash  BYTEA    NOT NULL UNIQUE,
    link_token  TEXT,
    name        TEXT    NOT NULL,
    class_name  TEXT    NOT NULL,
    birth_month TEXT    NOT NULL,
    mentor      TEXT    NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    student_key BYTEA,
    key_at      BIGINT,
    pseudonym   TEXT,
    used_at     BIGINT
);

-- Who a student is at the home school: the name and class the school knows, and the mentor.
CREATE TABLE people (
    pseudonym  TEXT PRIMARY KEY REFERENCES students (pseudonym),
    name       TEXT    NOT NULL,
    class_name TEXT    NOT NULL,
    mentor     TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);

-- A student's answers while they fill in the passport, saved as they go (JSON: section, then
-- question, then the answer and its smiley), until they sign a version.
CREATE TABLE drafts (
    pseudonym    TEXT PRIMARY KEY REFERENCES students (pseudonym),
    question_set TEXT    NOT NULL,
    answers      TEXT    NOT NULL,
    saved_at     BIGINT  NOT NULL
);
