-- changes counts the writes of resources and locks, so that each issuer
-- on the database notices those made by the others (Store.Changes). Every
-- such write bumps its one row in its own transaction.

-- +goose Up
CREATE TABLE changes (
	id smallint PRIMARY KEY CHECK (id = 0),
	count bigint NOT NULL
);
INSERT INTO changes (id, count) VALUES (0, 0);

-- +goose Down
DROP TABLE changes;
