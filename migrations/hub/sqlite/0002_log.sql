-- The Merkle log over `events`: the tree's stored hashes (tlog layout, one row per stored hash
-- index) and every signed checkpoint. Both are append-only, like the events they cover.

CREATE TABLE log_hashes (
    idx  INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);

CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB    NOT NULL,
    note BLOB    NOT NULL,
    at   INTEGER NOT NULL
);

CREATE TRIGGER log_hashes_no_update BEFORE UPDATE ON log_hashes
BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
CREATE TRIGGER log_hashes_no_delete BEFORE DELETE ON log_hashes
BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;

-- Witness cosignatures (C2SP tlog-witness style): a coordinator member's signature line on a
-- checkpoint it checked to be consistent with the last one it cosigned.
CREATE TABLE cosignatures (
    size    INTEGER NOT NULL REFERENCES checkpoints (size),
    witness TEXT    NOT NULL,
    line    BLOB    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
);
