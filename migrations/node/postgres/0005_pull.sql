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
    not_before   BIGINT  NOT NULL,
    not_after    BIGINT  NOT NULL,
    card         BYTEA   NOT NULL,
    grant_signed BYTEA   NOT NULL,
    noticed_at   BIGINT  NOT NULL,
    asked_at     BIGINT,
    refused      TEXT
);
