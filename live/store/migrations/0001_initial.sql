-- Live store schema, version 1: everything the live runner persists.
-- Written once for SQLite and PostgreSQL. {identity} is the dialect's auto-increment primary key;
-- times are int64 UTC nanoseconds, money and quantities floating point, JSON kept as TEXT.

-- The fence: the highest leader epoch any write has carried. One row, id 1.
CREATE TABLE leader_fence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL CHECK (epoch >= 0),
    ts_updated_ns BIGINT NOT NULL
);
INSERT INTO leader_fence (id, epoch, ts_updated_ns) VALUES (1, 0, 0);

-- One row per decision, committed before the broker call; state follows the order's life.
CREATE TABLE order_intents (
    client_order_id TEXT PRIMARY KEY,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty DOUBLE PRECISION NOT NULL CHECK (qty > 0),
    order_type TEXT NOT NULL,
    limit_price DOUBLE PRECISION,
    stop_price DOUBLE PRECISION,
    venue TEXT NOT NULL,
    bar_ts_ns BIGINT NOT NULL,
    ts_decided_ns BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    filled_qty DOUBLE PRECISION NOT NULL,
    avg_fill_price DOUBLE PRECISION,
    ts_updated_ns BIGINT NOT NULL,
    details TEXT
);
CREATE INDEX order_intents_by_state ON order_intents (state);
CREATE INDEX order_intents_by_strategy ON order_intents (strategy, symbol, bar_ts_ns);

-- Every state change of an intent, in commit order (seq), with the epoch that made it.
CREATE TABLE order_events (
    seq {identity},
    client_order_id TEXT NOT NULL REFERENCES order_intents (client_order_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    ts_ns BIGINT NOT NULL,
    reason TEXT
);
CREATE INDEX order_events_by_order ON order_events (client_order_id, seq);

-- What the broker last said about the order of an intent.
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY REFERENCES order_intents (client_order_id),
    venue TEXT NOT NULL,
    broker_order_id TEXT,
    broker_status TEXT,
    ts_updated_ns BIGINT NOT NULL,
    raw TEXT
);
CREATE INDEX orders_by_broker_id ON orders (venue, broker_order_id);

CREATE TABLE fills (
    venue TEXT NOT NULL,
    fill_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL REFERENCES order_intents (client_order_id),
    qty DOUBLE PRECISION NOT NULL CHECK (qty > 0),
    price DOUBLE PRECISION NOT NULL,
    fee DOUBLE PRECISION NOT NULL,
    ts_fill_ns BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    ts_recorded_ns BIGINT NOT NULL,
    details TEXT,
    PRIMARY KEY (venue, fill_id)
);
CREATE INDEX fills_by_order ON fills (client_order_id);

-- Closed round trips of a strategy, keyed by an id the runner derives (e.g. the exit order).
CREATE TABLE trades (
    trade_id TEXT PRIMARY KEY,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('long', 'short')),
    qty DOUBLE PRECISION NOT NULL,
    entry_ts_ns BIGINT NOT NULL,
    exit_ts_ns BIGINT NOT NULL,
    entry_price DOUBLE PRECISION NOT NULL,
    exit_price DOUBLE PRECISION NOT NULL,
    fees DOUBLE PRECISION NOT NULL,
    pnl DOUBLE PRECISION NOT NULL,
    exit_reason TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    ts_recorded_ns BIGINT NOT NULL,
    details TEXT
);
CREATE INDEX trades_by_strategy ON trades (strategy, exit_ts_ns);

-- Signed quantity per (strategy, symbol); only ever moved forward in time.
CREATE TABLE positions (
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    qty DOUBLE PRECISION NOT NULL,
    avg_price DOUBLE PRECISION,
    ts_ns BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    details TEXT,
    PRIMARY KEY (strategy, symbol)
);

-- Per strategy, and for the whole portfolio under strategy '*'.
CREATE TABLE equity_snapshots (
    strategy TEXT NOT NULL,
    ts_ns BIGINT NOT NULL,
    equity DOUBLE PRECISION NOT NULL,
    cash DOUBLE PRECISION,
    realized_pnl DOUBLE PRECISION,
    unrealized_pnl DOUBLE PRECISION,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (strategy, ts_ns)
);

-- Bot status: the latest heartbeat of each host.
CREATE TABLE heartbeats (
    host TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    ts_ns BIGINT NOT NULL,
    details TEXT
);

CREATE TABLE strategy_performance (
    strategy TEXT PRIMARY KEY,
    trades BIGINT NOT NULL,
    wins BIGINT NOT NULL,
    win_rate_pct DOUBLE PRECISION,
    pnl DOUBLE PRECISION NOT NULL,
    sharpe DOUBLE PRECISION,
    profit_factor DOUBLE PRECISION,
    avg_win DOUBLE PRECISION,
    avg_loss DOUBLE PRECISION,
    largest_win DOUBLE PRECISION,
    largest_loss DOUBLE PRECISION,
    max_drawdown_pct DOUBLE PRECISION,
    current_drawdown_pct DOUBLE PRECISION,
    periods_per_year DOUBLE PRECISION NOT NULL,
    ts_updated_ns BIGINT NOT NULL
);

-- A HALT is active until a person clears it; cleared ones stay as history.
CREATE TABLE halts (
    halt_id {identity},
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    epoch BIGINT,
    ts_created_ns BIGINT NOT NULL,
    cleared_by TEXT,
    ts_cleared_ns BIGINT
);
CREATE INDEX halts_active ON halts (ts_cleared_ns);

-- Promotion records (format defined by the promotion code, kept verbatim as JSON text).
CREATE TABLE promotions (
    promotion_id {identity},
    strategy TEXT NOT NULL,
    stage TEXT NOT NULL,
    code_fingerprint TEXT NOT NULL,
    record TEXT NOT NULL,
    created_by TEXT NOT NULL,
    ts_created_ns BIGINT NOT NULL,
    active INTEGER NOT NULL CHECK (active IN (0, 1))
);
CREATE UNIQUE INDEX promotions_one_active ON promotions (strategy, stage) WHERE active = 1;
