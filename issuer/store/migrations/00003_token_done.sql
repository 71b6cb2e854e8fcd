-- done is when a one-time token was used, or, unused, when it expires:
-- the time Prune removes it TokenGrace after (nanoseconds since the
-- epoch). Indexed, so that pruning reads only the tokens it removes
-- rather than decoding every token's doc. Tokens stored before it are
-- given theirs from their doc; a timestamptz rounds it to the microsecond,
-- so 999 ns are added, which puts it at or after the time in the doc: such
-- a token may be kept a microsecond longer, never removed early.

-- +goose Up
ALTER TABLE tokens ADD COLUMN done bigint;
UPDATE tokens SET done = (
	SELECT floor(extract(epoch FROM coalesce(d ->> 'consumed_at', d ->> 'expires')::timestamptz) * 1000000000)::bigint + 999
	FROM (SELECT convert_from(doc, 'UTF8')::jsonb AS d) AS j);
ALTER TABLE tokens ALTER COLUMN done SET NOT NULL;
CREATE INDEX tokens_done ON tokens (done);

-- +goose Down
DROP INDEX tokens_done;
ALTER TABLE tokens DROP COLUMN done;
