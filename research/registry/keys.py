"""What a registry row is keyed by: the strategy's lineage (name and source hash) and the data
(universe, bar interval, window), and where the registry lives (its URL).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from quantshift.data.bars import Bars
from quantshift.data.validate import iso_utc
from quantshift.errors import ConfigError
from quantshift.strategies import Strategy

ENV_REGISTRY_URL = "QUANTSHIFT_REGISTRY_URL"
REGISTRY_FILE = "registry.db"
MAX_NAMED_SYMBOLS = 8
"""A universe of more symbols is written as its count and a hash of their names."""

_MEMORY_SOURCE = "<memory>"
_source_hashes: dict[tuple[int, str], str] = {}
_source_files: dict[int, str | None] = {}


@dataclass(frozen=True)
class DataKey:
    """The data a trial was evaluated on: universe, bar interval and window (inclusive).

    ``universe`` is the bars' source and their symbols (sorted); bars built in memory (source
    ``<memory>``) have no name to keep, so their content fingerprint stands in for the source.
    """

    universe: str
    interval: str
    start_ns: int
    end_ns: int

    def __str__(self) -> str:
        return f"{self.universe}|{self.interval}|{iso_utc(self.start_ns)}|{iso_utc(self.end_ns)}"

    @classmethod
    def of(cls, bars: Bars) -> DataKey:
        """Return the key of ``bars`` (at least one bar)."""
        if bars.n_bars == 0:
            raise ConfigError(f"{bars.source}: no bars, so no data key")
        source = bars.source
        if source == _MEMORY_SOURCE:
            source = f"memory:{bars.fingerprint()[:16]}"
        symbols = sorted(bars.symbols)
        if len(symbols) > MAX_NAMED_SYMBOLS:
            digest = hashlib.sha256("\x1f".join(symbols).encode()).hexdigest()[:10]
            names = f"{len(symbols)} symbols #{digest}"
        else:
            names = ",".join(symbols)
        return cls(
            universe=f"{source}[{names}]",
            interval=interval_name(bars.bar_spacing_s()),
            start_ns=int(bars.ts_ns[0]),
            end_ns=int(bars.ts_ns[-1]),
        )


def data_key(bars: Bars) -> str:
    """Return the stable string key of ``bars``: ``universe|interval|first bar|last bar``."""
    return str(DataKey.of(bars))


def interval_name(seconds: float | None) -> str:
    """Return a bar spacing in seconds as ``1d``, ``4h``, ``15min`` or ``30s`` (``-``: none)."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{seconds:g}s"


def source_hash(strategy: Strategy) -> str:
    """Return the strategy's source hash (:func:`quantshift.provenance.strategy_hash`, first 16
    hex digits): its lineage is its name and every source hash it has had.

    Cached per signal function and source-file modification time, so a sweep pays for it once.
    """
    from quantshift.provenance import source_file, strategy_hash

    func = getattr(strategy.signal_nb, "py_func", strategy.signal_nb)
    if id(func) not in _source_files:
        _source_files[id(func)] = source_file(func)
    path = _source_files[id(func)]
    stamp = ""
    if path is not None:
        try:
            stat = os.stat(path)
            stamp = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        except OSError:
            stamp = str(path)
    key = (id(func), f"{strategy.name}:{stamp}")
    found = _source_hashes.get(key)
    if found is None:
        found = strategy_hash(strategy)[:16]
        _source_hashes[key] = found
    return found


def registry_url(url: str | None = None) -> str:
    """Return the registry's URL: ``url``, else env ``QUANTSHIFT_REGISTRY_URL``, else the
    tracking database when it is PostgreSQL (env ``MLFLOW_TRACKING_URI``), else
    ``sqlite:///<experiments dir>/registry.db`` beside the local MLflow store."""
    from research.tracking import ENV_TRACKING_URI, resolve_experiments_dir

    chosen = url or os.environ.get(ENV_REGISTRY_URL)
    if chosen:
        return chosen
    tracking = os.environ.get(ENV_TRACKING_URI, "")
    if tracking.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return tracking
    return f"sqlite:///{resolve_experiments_dir() / REGISTRY_FILE}"
