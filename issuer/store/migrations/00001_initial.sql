-- The first schema of the PostgreSQL store. Records are kept as the JSON
-- the bbolt store writes (doc), so that both stores hand back exactly the
-- same values; the columns beside it are what queries select and order
-- by. Keys use the "C" collation so that rows come back in the byte order
-- of their keys, as they do from bbolt. Times that are compared in SQL are
-- nanoseconds since the epoch.

-- +goose Up
CREATE TABLE tokens (
	hash text COLLATE "C" PRIMARY KEY,
	doc bytea NOT NULL
);

CREATE TABLE instances (
	id text COLLATE "C" PRIMARY KEY,
	bot text NOT NULL,
	token_name text NOT NULL,
	doc bytea NOT NULL
);
CREATE INDEX instances_bot ON instances (bot);
CREATE INDEX instances_token_name ON instances (token_name) WHERE token_name <> '';

-- kind: 0 a bot's lock, 1 an instance's, 2 a token resource's.
CREATE TABLE locks (
	kind smallint NOT NULL,
	key text COLLATE "C" NOT NULL,
	doc bytea NOT NULL,
	PRIMARY KEY (kind, key)
);

CREATE TABLE used (
	key text PRIMARY KEY,
	owner text NOT NULL,
	expires bigint NOT NULL
);
CREATE INDEX used_expires ON used (expires);

-- key is the SHA-256 of the challenge.
CREATE TABLE challenges (
	key bytea PRIMARY KEY,
	token_name text NOT NULL,
	expires bigint NOT NULL
);
CREATE INDEX challenges_expires ON challenges (expires);

-- names is the JSON array of the node's names, compared whole.
CREATE TABLE nodes (
	instance text COLLATE "C" PRIMARY KEY,
	bot text NOT NULL,
	names text NOT NULL,
	renewed bigint NOT NULL,
	doc bytea NOT NULL
);

CREATE TABLE resources (
	key text COLLATE "C" PRIMARY KEY,
	doc bytea NOT NULL
);

-- +goose Down
DROP TABLE resources;
DROP TABLE nodes;
DROP TABLE challenges;
DROP TABLE used;
DROP TABLE locks;
DROP TABLE instances;
DROP TABLE tokens;
