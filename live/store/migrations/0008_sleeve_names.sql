-- Live store schema, version 8: a sleeve is a sleeve in the store too, as in the core.
-- The columns that held a sleeve's name under "strategy" are renamed "sleeve" (a strategy is the
-- signal function a sleeve runs, e.g. ma_crossover); a promotion row's "strategy" held the
-- record's name (what a sleeve's `promotion = "<name>"` refers to), so it becomes "name".
-- RENAME COLUMN keeps the rows and rewrites the indexes on the column (SQLite >= 3.25 and
-- PostgreSQL); indexes named after the old column are dropped and made again under new names,
-- since SQLite cannot rename an index.

ALTER TABLE order_intents RENAME COLUMN strategy TO sleeve;
DROP INDEX order_intents_by_strategy;
CREATE INDEX order_intents_by_sleeve ON order_intents (sleeve, symbol, bar_ts_ns);

ALTER TABLE trades RENAME COLUMN strategy TO sleeve;
DROP INDEX trades_by_strategy;
CREATE INDEX trades_by_sleeve ON trades (sleeve, exit_ts_ns);

ALTER TABLE positions RENAME COLUMN strategy TO sleeve;

-- The portfolio's snapshots keep sleeve '*'.
ALTER TABLE equity_snapshots RENAME COLUMN strategy TO sleeve;

-- One row per sleeve: copied into a new table rather than renamed, so that its primary key's
-- name (PostgreSQL: <table>_pkey) follows the table's.
CREATE TABLE sleeve_performance (
    sleeve TEXT PRIMARY KEY,
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
INSERT INTO sleeve_performance (sleeve, trades, wins, win_rate_pct, pnl, sharpe, profit_factor,
    avg_win, avg_loss, largest_win, largest_loss, max_drawdown_pct, current_drawdown_pct,
    periods_per_year, ts_updated_ns)
SELECT strategy, trades, wins, win_rate_pct, pnl, sharpe, profit_factor, avg_win, avg_loss,
    largest_win, largest_loss, max_drawdown_pct, current_drawdown_pct, periods_per_year,
    ts_updated_ns
FROM strategy_performance;
DROP TABLE strategy_performance;

-- The partial unique index promotions_one_active follows the column.
ALTER TABLE promotions RENAME COLUMN strategy TO name;
