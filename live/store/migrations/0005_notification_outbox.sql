-- Live store schema, version 5: the notification outbox.

-- An event worth telling a person about (HALT, takeover, adoption, refusal, venue auth failure,
-- daily summary), written in the same transaction as the fact it reports. event_key is unique,
-- so the primary and the standby writing the same event leave one row; a notifier claims a row
-- (claimed_by IS NULL -> its host) before sending, so one host sends it.
CREATE TABLE notifications (
    notification_id {identity},
    event_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    ts_created_ns BIGINT NOT NULL,
    claimed_by TEXT,
    ts_claimed_ns BIGINT,
    outcome TEXT,
    ts_done_ns BIGINT
);
CREATE INDEX notifications_unclaimed ON notifications (claimed_by, notification_id);
