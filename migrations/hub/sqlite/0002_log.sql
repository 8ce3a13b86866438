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
