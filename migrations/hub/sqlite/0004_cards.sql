-- Key transparency for students: a home node's record of a student card is a log event
-- 'card' whose envelope_id holds the card index (a keyed hash of the pseudonym) and whose
-- body_sha256 holds the card's hash. Looked up by index.
CREATE INDEX events_cards ON events (envelope_id) WHERE event = 'card';
