-- An intake status names the package it is about (EnvelopeHeader.about_package), so the
-- coordinators' statistics can count passports picked up without an intake status.
ALTER TABLE envelopes ADD COLUMN about_package BYTEA;
