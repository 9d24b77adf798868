-- Live store schema, version 4: which store this is, and which runner it belongs to.

-- One row, id 1. instance_id is drawn when the store is first opened: a runner that finds
-- another id (a database dropped and created again) stops. runner and lease_name are the
-- identity of the one runner that trades on this store, set at its first start.
CREATE TABLE store_identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL,
    ts_created_ns BIGINT NOT NULL,
    runner TEXT,
    lease_name TEXT,
    ts_claimed_ns BIGINT
);
