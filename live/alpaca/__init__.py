"""Alpaca equities adapter (alpaca-py): the broker, its config and historical bar pages.

Paper or live is explicit in ``AlpacaConfig.mode`` and checked against the account at connect.
"""

from live.alpaca.client import AlpacaBroker
from live.alpaca.config import AlpacaConfig
from live.alpaca.data import bar_pages
from live.alpaca.parse import MarketClock

__all__ = ["AlpacaBroker", "AlpacaConfig", "MarketClock", "bar_pages"]
