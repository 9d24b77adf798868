-- Live store schema, version 6: the paper venue's order book.

-- Every order the paper venue was sent, as the venue keeps it: a market order waits for the
-- next bar's open; a resting order (stop, limit, trailing stop) waits for the market to reach
-- its level. Orders sharing an oco_group cancel each other. What an order executed is in
-- paper_orders (one execution per client order id), written in the same transaction.
CREATE TABLE paper_book (
    client_order_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty DOUBLE PRECISION NOT NULL CHECK (qty > 0),
    order_type TEXT NOT NULL,
    stop_price DOUBLE PRECISION,
    limit_price DOUBLE PRECISION,
    trail_amount DOUBLE PRECISION,
    best_price DOUBLE PRECISION,
    oco_group TEXT,
    status TEXT NOT NULL,
    submits INTEGER NOT NULL,
    ts_created_ns BIGINT NOT NULL,
    ts_updated_ns BIGINT NOT NULL
);
CREATE INDEX paper_book_open ON paper_book (status, symbol);
