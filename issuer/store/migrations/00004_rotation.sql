-- rotations holds the state of each certificate authority's rotation
-- (Store.Rotations), one row per type; a type without a row is in
-- standby. SetRotation compares the version in doc under the row lock;
-- phase is a copy of doc's, for reading by hand.

-- +goose Up
CREATE TABLE rotations (
	type text COLLATE "C" PRIMARY KEY,
	phase text NOT NULL,
	doc bytea NOT NULL
);

-- +goose Down
DROP TABLE rotations;
