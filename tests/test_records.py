"""The kernels' records: one definition each, readable by name in plain Python, one decoder.

Oracles: NumPy's own field access (a record read by attribute must equal the same field read
by key) and the decision layer's objects (a decoded record encodes back to the same record).
"""

from __future__ import annotations

import numpy as np
import pytest

import quantshift as qs
from quantshift.engine import records
from quantshift.portfolio import PortfolioConfig, Sleeve, TargetOrder, rows
from quantshift.portfolio.decide import orders_from_records, orders_to_records

DTYPES = {
    name: value
    for module in (records, rows)
    for name, value in vars(module).items()
    if name.endswith("_dt") and isinstance(value, np.dtype)
}


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_every_field_reads_by_attribute_as_by_key(name):
    values = np.zeros(1, DTYPES[name])
    for i, field in enumerate(values.dtype.names):
        values[field] = i + 1
    record = values[0]
    for field in values.dtype.names:
        assert getattr(record, field) == record[field], f"{name}.{field}"


def test_regression_config_fields_named_like_numpy_attributes_read_the_attribute():
    # SimConfig's `fill` and `size` read numpy.record.fill (a method) and .size (1) in plain
    # Python (NUMBA_DISABLE_JIT=1) while compiled kernels read the fields: results differed.
    cfg = qs.SimConfig(fill="close", size=0.5).to_record()[0]
    assert cfg.fill_at == 1 and cfg.size_fraction == 0.5
    with pytest.raises(ValueError, match="shadow"):
        records.record_dtype([("size", np.float64)])


def test_metrics_records_view_as_the_metric_matrix():
    values = np.zeros(3, records.metrics_dt)
    values["sharpe"] = [1.0, 2.0, 3.0]
    matrix = records.float_matrix(values)
    assert matrix.shape == (3, len(records.METRICS))
    assert matrix[:, records.METRICS.index("sharpe")].tolist() == [1.0, 2.0, 3.0]


def test_orders_decode_and_encode_to_the_same_records():
    bars = qs.load_bars("synthetic:symbols=2,bars=30,seed=5")
    config = PortfolioConfig(
        sleeves=(Sleeve(strategy="ma_crossover", symbols=list(bars.symbols), allocation=1.0),),
    )
    layout = config.layout()
    first = orders_to_records(
        [
            TargetOrder(
                sleeve="ma_crossover",
                strategy="ma_crossover",
                symbol=bars.symbols[1],
                action="entry",
                side="sell",
                units=3.0,
                reason="entry",
                ts_ns=int(bars.ts_ns[10]),
                reference_price=101.5,
                stop_distance=2.0,
                max_units=4.0,
                capped_by="max_heat",
            ),
            TargetOrder(
                sleeve="ma_crossover",
                strategy="ma_crossover",
                symbol=bars.symbols[0],
                action="exit",
                side="buy",
                units=1.5,
                reason="stop_loss",
                ts_ns=int(bars.ts_ns[11]),
                reference_price=99.0,
            ),
        ],
        layout,
    )
    decoded = orders_from_records(first, layout)
    assert decoded[0].capped_by == "max_heat" and decoded[1].reason == "stop_loss"
    assert orders_to_records(decoded, layout).tobytes() == first.tobytes()
