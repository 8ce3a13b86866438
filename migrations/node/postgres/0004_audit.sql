-- What staff did at this node, for its admin: every sign-in, view, status, push, invitation and
-- new key, with who and when. who: the staff member's user name (a local account, or the
-- identity their organisation's provider vouched for); role: the role they acted in; action:
-- one word ('sign-in', 'view', 'status', 'push', 'invite', 'key-link', ...); subject: what it
-- was about (a student's pseudonym or a received passport's grant), empty for a sign-in.
CREATE TABLE staff_audit (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT  NOT NULL,
    who     TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL DEFAULT '',
    detail  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX staff_audit_at ON staff_audit (at);

-- A session also ends after it has been idle too long: last_seen is when it was last used
-- (written at most once a minute).
ALTER TABLE web_sessions ADD COLUMN last_seen BIGINT  NOT NULL DEFAULT 0;
