-- Live store schema, version 10: the overlay inputs each decided bar was decided with.
--
-- A runner whose config has [regimes] or [sentiment] decides each bar with a regime label per
-- symbol (from its pinned registered model) and a news score per symbol. News read from a
-- venue's API cannot be read back identically later, so the inputs are kept with the bars:
-- `live divergence` replays the backtest with exactly what the runner decided with. One row per
-- runner, bar and symbol; a leader redoing a bar writes its own decision's inputs over the row.
-- regime: the core's label code 0..4, NULL when not known (the core's -1).
-- sentiment: the score in [-1, 1], NULL when the symbol had no news.
CREATE TABLE decided_inputs (
    runner TEXT NOT NULL,
    bar_ts_ns BIGINT NOT NULL,
    symbol TEXT NOT NULL,
    regime INTEGER,
    sentiment DOUBLE PRECISION,
    epoch BIGINT NOT NULL,
    ts_recorded_ns BIGINT NOT NULL,
    PRIMARY KEY (runner, bar_ts_ns, symbol)
);
