-- Live store schema: the bars the runner decided on, with the warm-up history its first decision
-- read, so that any cycle can be replayed and `live divergence` rebuilds the backtest on exactly
-- the bars the runner saw. A symbol without a bar at a time has no row there.
CREATE TABLE decided_bars (
    symbol TEXT NOT NULL,
    ts_ns BIGINT NOT NULL,
    open DOUBLE PRECISION NOT NULL,
    high DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL,
    close DOUBLE PRECISION NOT NULL,
    volume DOUBLE PRECISION NOT NULL,
    ts_recorded_ns BIGINT NOT NULL,
    PRIMARY KEY (symbol, ts_ns)
);
CREATE INDEX decided_bars_by_time ON decided_bars (ts_ns);
-- The first bar each runner decided on: the divergence backtest trades from there.
CREATE TABLE decided_from (
    runner TEXT PRIMARY KEY,
    ts_ns BIGINT NOT NULL
);
