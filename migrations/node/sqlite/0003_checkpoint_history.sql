-- Every checkpoint this node verified (the newest 10,000), so `overstap log audit` can check
-- the hub's entries against each of them and say where the history first diverges.
CREATE TABLE log_checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB    NOT NULL,
    note        BLOB    NOT NULL,
    verified_at INTEGER NOT NULL
);

INSERT INTO log_checkpoints (size, root, note, verified_at)
SELECT size, root, note, 0 FROM log_state WHERE size > 0;
