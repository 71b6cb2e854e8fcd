-- rotations holds the state of each certificate authority's rotation
-- (Store.Rotations), one row per type; a type without a row is in
-- standby. phase is what SetRotation compares and sets.

-- +goose Up
CREATE TABLE rotations (
	type text COLLATE "C" PRIMARY KEY,
	phase text NOT NULL,
	doc bytea NOT NULL
);

-- +goose Down
DROP TABLE rotations;
