-- The signed statuses a recipient sent for a run of packages in one envelope ("ontvangen" for
-- each): kept once here, by that envelope's id, which each trail row it made names
-- (trail.envelope_id). A status that came alone stays in its trail row's evidence.
CREATE TABLE run_statuses (
    envelope_id BYTEA   PRIMARY KEY,
    from_org    TEXT    NOT NULL,
    signed      BYTEA   NOT NULL,
    at          BIGINT  NOT NULL
);
