-- Live store schema, version 3: which promotion record each sleeve trades, and who moved it.

-- A runner's sleeve adopted a promotion record at a cycle boundary: it trades with that
-- record's parameters from bar bar_ts_ns on (a leader redoing the bar writes the same row).
CREATE TABLE promotion_adoptions (
    runner TEXT NOT NULL,
    sleeve TEXT NOT NULL,
    promotion_id BIGINT NOT NULL,
    record_id TEXT NOT NULL,
    bar_ts_ns BIGINT NOT NULL,
    epoch BIGINT,
    ts_adopted_ns BIGINT NOT NULL,
    PRIMARY KEY (runner, sleeve, bar_ts_ns)
);
CREATE INDEX promotion_adoptions_by_record ON promotion_adoptions (promotion_id);

-- Promotions, rollbacks and refusals: what happened to which record, by whom, and why.
CREATE TABLE promotion_events (
    event_id {identity},
    promotion_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    created_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    ts_ns BIGINT NOT NULL
);
CREATE INDEX promotion_events_by_record ON promotion_events (promotion_id);
