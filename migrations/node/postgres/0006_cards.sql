-- Key transparency for students (home side): every student card this node issues or replaces,
-- by its hash and the student's card index (HMAC-SHA256 keyed with the pseudonym), written in
-- the same transaction as the card. The log loop records each at the hub and keeps the log
-- index the hub gave it; until then log_index is NULL.
CREATE TABLE card_log (
    card_sha256 BYTEA   PRIMARY KEY,
    card_index  BYTEA   NOT NULL,
    pseudonym   TEXT    NOT NULL,
    made_at     BIGINT  NOT NULL,
    log_index   BIGINT
);
CREATE INDEX card_log_waiting ON card_log (made_at) WHERE log_index IS NULL;
CREATE INDEX card_log_student ON card_log (pseudonym);
