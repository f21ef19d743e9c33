-- Session tokens name a resident by an opaque subject, never the NIK: a
-- token is pasted, logged and readable by whoever holds it. The subject is
-- random, made once per identity, and stays when the identity is bound to a
-- new device.
ALTER TABLE identities ADD COLUMN subject TEXT;
UPDATE identities SET subject = {{random_hex_128}} WHERE subject IS NULL;
CREATE UNIQUE INDEX identities_by_subject ON identities (subject);
