-- PutNode deletes the earlier instance of the same host and the nodes
-- past their retention, and Prune the latter, on every host's renewal:
-- without these indexes each is a scan of the whole inventory.

-- +goose Up
CREATE INDEX nodes_host ON nodes (bot, names);
CREATE INDEX nodes_renewed ON nodes (renewed);

-- +goose Down
DROP INDEX nodes_renewed;
DROP INDEX nodes_host;
