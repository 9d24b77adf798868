"""Coinbase Advanced Trade (spot crypto) venue adapter over coinbase-advanced-py.

``CoinbaseBroker`` implements the broker contract; ``bar_pages`` reads historical candles.
"""

from live.coinbase.client import CoinbaseBroker
from live.coinbase.config import CoinbaseConfig
from live.coinbase.data import bar_pages

__all__ = ["CoinbaseBroker", "CoinbaseConfig", "bar_pages"]
