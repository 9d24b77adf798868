-- Live store schema, version 2: where a runner resumes, and the paper venue's order book.

-- The decision state after a runner's last completed bar, and the orders waiting to fill; a
-- standby taking over loads it and redoes the next bar (every write of a cycle is idempotent).
CREATE TABLE runner_state (
    runner TEXT PRIMARY KEY,
    bar_ts_ns BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    pending TEXT NOT NULL,
    ts_updated_ns BIGINT NOT NULL
);

-- The paper broker's side: the orders it executed, one per client order id (a second submit
-- of the same id is answered with the first, as a real venue's duplicate-id check does).
CREATE TABLE paper_orders (
    client_order_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty DOUBLE PRECISION NOT NULL CHECK (qty > 0),
    price DOUBLE PRECISION NOT NULL,
    fee DOUBLE PRECISION NOT NULL,
    ts_fill_ns BIGINT NOT NULL,
    submits INTEGER NOT NULL,
    ts_created_ns BIGINT NOT NULL
);
