-- What this node knows of the hub's log: the newest checkpoint it verified, the envelopes whose
-- inclusion it has proven, and evidence kept when the hub showed a log that does not add up.

CREATE TABLE log_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    size  INTEGER NOT NULL,
    root  BLOB    NOT NULL,
    note  BLOB    NOT NULL,
    alarm TEXT
);

CREATE TABLE log_proofs (
    envelope_id BLOB PRIMARY KEY,
    log_index   INTEGER NOT NULL,
    tree_size   INTEGER NOT NULL,
    proven_at   INTEGER NOT NULL
);

-- Both signed checkpoints (or the checkpoint and the failed proof) that show the hub lied.
CREATE TABLE log_evidence (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    reason    TEXT    NOT NULL,
    held_note BLOB    NOT NULL,
    shown_note BLOB   NOT NULL,
    at        INTEGER NOT NULL
);

-- Checkpoints other members saw, carried in their envelopes, waiting to be compared with ours.
CREATE TABLE peer_checkpoints (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    from_org TEXT    NOT NULL,
    note     BLOB    NOT NULL,
    at       INTEGER NOT NULL,
    checked  INTEGER NOT NULL DEFAULT 0
);
