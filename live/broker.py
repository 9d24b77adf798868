"""The broker contract every venue adapter implements (paper, Alpaca, Coinbase Advanced).

Domain objects only cross it: order requests keyed by our deterministic client order id, the
venue's orders and fills normalised to one vocabulary, and errors that say what the runner does
next (stop at start, resolve by lookup, back off, or record a rejection).
"""

from __future__ import annotations

import ipaddress
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from live.secrets import scrub
from quantshift.errors import ConfigError, QuantShiftError

VENUES = ("alpaca", "coinbase")
"""The real venues, one adapter package each (``live.venues.venue``)."""
TIMEFRAME_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}
"""Bar lengths the runner trades on and every venue's ``bar_pages`` serves."""
SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop", "trailing_stop")
RESTING_TYPES = ("limit", "stop", "trailing_stop")
"""Order types that rest at the venue until the market reaches their level."""
TIME_IN_FORCE = ("day", "gtc", "ioc")
LEG_CODES = {"stop": "s", "limit": "l", "trailing_stop": "t"}
"""The letter a protective leg's client order id adds to its OCO group's id (``leg_id``)."""
GROUP_CODE = "p"
"""The letter of the one venue order that carries a whole OCO group where a venue needs that."""


def leg_id(oco_group: str, leg: str) -> str:
    """The client order id of a protective leg (``"stop"``, ``"limit"``, ``"trailing_stop"``,
    or ``"group"`` for one venue order carrying them all): its OCO group's id and one letter,
    so a venue adapter can find a leg from its id alone (``leg_of``)."""
    return oco_group + (GROUP_CODE if leg == "group" else LEG_CODES[leg])


def leg_of(client_order_id: str) -> tuple[str, str] | None:
    """``(oco_group, leg)`` of a client order id made by ``leg_id`` (None for any other id: the
    runner's ids are ``qs`` and hex digits, which never end in a leg's letter)."""
    group, code = client_order_id[:-1], client_order_id[-1:]
    if len(group) < 18 or not group.startswith("qs") or not _HEX.issuperset(group[2:]):
        return None
    if code == GROUP_CODE:
        return group, "group"
    leg = next((k for k, c in LEG_CODES.items() if c == code), None)
    return None if leg is None else (group, leg)


_HEX = frozenset("0123456789abcdef")


def trailing_level(side: str, best: float | None, trail: float | None) -> float | None:
    """The level of a trailing stop whose legs ``side`` (``"sell"`` protects a long) trailing
    ``trail`` behind the best price ``best``; None without both."""
    if trail is None or best is None:
        return None
    return best - (1.0 if side == "sell" else -1.0) * trail


def binding_stop(
    side: str, stop: float | None, trailing: float | None
) -> tuple[float | None, str | None]:
    """The stop level a venue order rests at for a position's fixed ``stop`` and trailing
    level ``trailing`` (legs that ``side``), and the leg it belongs to: the tighter of the two;
    on a tie the fixed stop, as the fill model names the exit
    (``quantshift.engine.simulate._stop_reason_nb``)."""
    if trailing is None:
        return stop, ("stop" if stop is not None else None)
    if stop is None or (1.0 if side == "sell" else -1.0) * (trailing - stop) > 0:
        return trailing, "trailing_stop"
    return stop, "stop"


class OrderStatus:
    """Normalised order status (the venues' own names are mapped in each ``parse`` module)."""

    OPEN = "open"
    """Accepted by the venue, nothing filled yet."""
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    """Cancelled or expired with ``filled_qty`` possibly above zero."""
    REJECTED = "rejected"

    FINAL: ClassVar[frozenset[str]] = frozenset({FILLED, CANCELLED, REJECTED})
    ALL: ClassVar[tuple[str, ...]] = (OPEN, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED)


# ----------------------------------------------------------------------------- errors
class BrokerError(QuantShiftError):
    """A venue call failed; the subclass says what the caller does next."""

    def __init__(self, venue: str, message: str) -> None:
        # A venue's answer quoted in the message may echo a key: never print or log it.
        super().__init__(scrub(f"{venue}: {message}"))
        self.venue = venue


class BrokerAuthError(BrokerError):
    """401/403: wrong, missing or unauthorised keys. Fail fast at start, never retry."""


class BrokerRejectedError(BrokerError):
    """The venue answered definitely that it will not take the order (the intent is REJECTED)."""


class BrokerAmbiguousError(BrokerError):
    """No definite answer (timeout, connection reset, 5xx): the order may or may not exist. The
    intent goes to UNKNOWN and is resolved by looking it up by client order id, never by
    sending it again."""


class BrokerRateLimitedError(BrokerError):
    """429 and the backoff the venue asked for ran out of attempts."""

    def __init__(self, venue: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(venue, message)
        self.retry_after_s = retry_after_s


class BrokerUnavailableError(BrokerError):
    """A read failed for a reason that is neither auth nor rate limit (network, 5xx)."""


ANSWER_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)
"""What reading a venue's answer raises when it is not what the venue documents (pydantic's
``ValidationError`` and requests' ``JSONDecodeError`` are ``ValueError``s)."""


@contextmanager
def venue_answer(venue: str, what: str, *, sends: bool = False) -> Iterator[None]:
    """Read a venue's answer inside this block: one that does not parse becomes a broker error
    saying so (ambiguous after a call that sends: the order may exist; unavailable after a
    read) instead of a parser's traceback. QuantShift's own errors pass through."""
    try:
        yield
    except QuantShiftError:
        raise
    except ANSWER_ERRORS as exc:
        problem = f"{what}: the venue's answer was not understood ({type(exc).__name__})"
        if sends:
            raise BrokerAmbiguousError(
                venue, f"{problem}; the order may exist, look it up by client order id"
            ) from None
        raise BrokerUnavailableError(venue, problem) from None


# ----------------------------------------------------------------------------- domain objects
@dataclass(frozen=True, kw_only=True)
class Account:
    """Cash and equity in the account currency (USD for both venues here)."""

    cash: float
    equity: float
    buying_power: float
    currency: str = "USD"


@dataclass(frozen=True, kw_only=True)
class OrderRequest:
    """One order to send. ``client_order_id`` is never empty (Coinbase's SDK silently replaces
    an empty id with a random one, which would break idempotency).

    Bracket legs (``take_profit_price``, ``stop_loss_price``) go with a market or limit entry
    where the venue supports them (``Broker.capabilities`` has ``"bracket"``).

    Resting orders: a ``stop`` triggers at ``stop_price``, a ``limit`` fills at ``limit_price``
    or better, a ``trailing_stop`` follows the best price seen by ``trail_amount`` (price
    units), starting from ``trail_from_price`` where the venue accepts one (the entry's fill
    price; a venue that cannot takes its own market price). Orders sharing an ``oco_group``
    cancel each other: at most one of them ever fills (a position's stop, target and trailing
    stop).
    """

    client_order_id: str
    symbol: str
    side: str
    qty: float
    order_type: str = "market"
    limit_price: float | None = None
    stop_price: float | None = None
    take_profit_price: float | None = None
    stop_loss_price: float | None = None
    trail_amount: float | None = None
    trail_from_price: float | None = None
    oco_group: str | None = None
    time_in_force: str = "day"

    def __post_init__(self) -> None:
        where = f"order {self.client_order_id!r}"
        if not isinstance(self.client_order_id, str) or not self.client_order_id.strip():
            raise ValueError("order request: client_order_id must be a non-empty string")
        if not isinstance(self.symbol, str) or not self.symbol:
            raise ValueError(f"{where}: symbol must be a non-empty string")
        if self.side not in SIDES:
            raise ValueError(f"{where}: side must be one of {SIDES}, got {self.side!r}")
        if self.order_type not in ORDER_TYPES:
            raise ValueError(f"{where}: order_type must be one of {ORDER_TYPES}")
        if self.time_in_force not in TIME_IN_FORCE:
            raise ValueError(f"{where}: time_in_force must be one of {TIME_IN_FORCE}")
        if not (isinstance(self.qty, int | float) and math.isfinite(self.qty) and self.qty > 0):
            raise ValueError(f"{where}: qty must be a positive finite number, got {self.qty!r}")
        needs = {"limit": "limit_price", "stop": "stop_price", "trailing_stop": "trail_amount"}
        need = needs.get(self.order_type)
        if need is not None and getattr(self, need) is None:
            raise ValueError(f"{where}: a {self.order_type} order needs {need}")
        if self.oco_group is not None and self.order_type not in RESTING_TYPES:
            raise ValueError(f"{where}: only resting orders ({RESTING_TYPES}) join an oco_group")
        for name in (
            "limit_price", "stop_price", "take_profit_price", "stop_loss_price", "trail_amount",
            "trail_from_price",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{where}: {name} must be a positive price, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class BrokerOrder:
    """An order as the venue reports it, in our vocabulary."""

    client_order_id: str
    venue_order_id: str
    symbol: str
    side: str
    qty: float
    order_type: str
    status: str
    filled_qty: float = 0.0
    avg_fill_price: float | None = None
    fees: float = 0.0
    ts_updated_ns: int = 0
    stop_price: float | None = None
    limit_price: float | None = None
    trail_amount: float | None = None
    trail_best_price: float | None = None
    """The best price a trailing stop has followed so far (Alpaca's ``hwm``)."""
    oco_group: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in OrderStatus.FINAL


@dataclass(frozen=True, kw_only=True)
class BrokerFill:
    """One execution. ``fill_id`` is the venue's id, unique per execution, so a fill seen twice
    (a replayed stream event, a backfill after reconnect) is recorded once."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    ts_fill_ns: int


# ----------------------------------------------------------------------------- venue settings
class VenueSettings:
    """Base of a venue adapter's frozen config dataclass: built from a live config's
    ``[broker]`` table, unknown keys refused by name."""

    venue: ClassVar[str]

    @property
    def uses_test_venue(self) -> bool:
        """Whether the adapter talks to a local test server (loopback), not the real venue."""
        raise NotImplementedError

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str, *, mode: str = "paper"):
        """Build the config from the ``[broker]`` table of a live config (``kind`` and
        ``mode`` removed; ``mode`` is passed separately).

        Raises
        ------
        ConfigError
            On an unknown key (naming the key and the allowed ones) or a bad value, with
            ``where`` (the config file) in the message.
        """
        allowed = sorted(f.name for f in fields(cls) if f.name != "mode")
        for key in options:
            if key not in allowed:
                raise ConfigError(
                    f"{where}: [broker] {key}: unknown key for the {cls.venue} broker; "
                    f"allowed: {', '.join(allowed)}"
                )
        try:
            return cls(mode=mode, **dict(options))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{where}: [broker] {exc}") from None


def is_loopback_host(host: str) -> bool:
    """True if ``host`` (no port) is this machine: a local test venue, never a real one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------- the contract
class Broker(ABC):
    """A venue. Implementations are thin: SDK calls in a client, JSON shapes in a ``parse``
    module, and errors mapped to the ``Broker*Error`` classes above.

    Every method that sends something is idempotent by client order id: ``submit`` of an id
    the venue already has returns that order (Alpaca's 422 "client_order_id must be unique" is
    an adoption, not a rejection).
    """

    venue: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset({"market"})
    """Order kinds supported: ``market``, ``limit``, ``stop``, ``trailing_stop``, ``oco``,
    ``bracket``, ``stream``."""
    supports_resting_protection: ClassVar[bool] = False
    """Whether a position's stop, target and trailing stop rest at this venue as orders (stop,
    limit and trailing-stop orders in one OCO group). Without it the runner watches the levels
    after each bar closes and sends a market exit."""
    triggered_stops_may_rest: ClassVar[bool] = False
    """Whether a protective stop the market went through may still rest unfilled at the venue
    (Coinbase's stop-limit: a gap past its limit leaves it resting as a limit order), where
    the fill model fills at the open. The runner then cancels it after that bar and exits at
    market (``RestingProtection.stranded``)."""
    protection_needs_whole_units: ClassVar[bool] = False
    """Whether the venue rests protective orders for whole units only (Alpaca takes fractional
    shares on DAY orders only): the runner then needs ``[costs] whole_units`` for sleeves with
    levels."""

    @abstractmethod
    def connect(self) -> Account:
        """Check the keys and the mode (paper vs live) against the venue; return the account.
        Raise ``BrokerAuthError`` on 401/403 and ``ConfigError`` on a mode mismatch."""

    @abstractmethod
    def account(self) -> Account: ...

    @abstractmethod
    def positions(self) -> dict[str, float]:
        """Net units per symbol (signed; crypto balances count as long positions)."""

    @abstractmethod
    def submit(self, request: OrderRequest) -> BrokerOrder:
        """Send ``request``; an id the venue already knows returns the existing order."""

    @abstractmethod
    def order(self, client_order_id: str) -> BrokerOrder | None:
        """Look an order up by client order id; None if the venue never received it."""

    @abstractmethod
    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        """Cancel what is left of an order; return it as it ends (None if unknown). Cancelling
        a final order is not an error: its final state is returned."""

    @abstractmethod
    def open_orders(self) -> list[BrokerOrder]: ...

    @abstractmethod
    def fills(self, since_ns: int = 0) -> list[BrokerFill]:
        """Executions at or after ``since_ns``, oldest first (the backfill after a reconnect)."""

    def submit_protection(self, requests: list[OrderRequest]) -> list[BrokerOrder]:
        """Send one position's protective legs (one ``oco_group``, ids from ``leg_id``) and
        return each as the venue has it. A venue that forms OCO groups from ``oco_group``
        takes them one by one (this default); one that holds a position's shares for a single
        closing order (Alpaca) sends them as one venue order and finds each leg by its id."""
        return [self.submit(request) for request in requests]

    def replace(self, client_order_id: str, request: OrderRequest) -> BrokerOrder | None:
        """Move a resting order to ``request`` (a new client order id, derived
        deterministically by the caller): cancel the old one, then send the new one, unless
        the old one filled before the cancel landed (then its final state is returned and
        nothing is sent). Venues with an atomic replace override this."""
        old = self.cancel(client_order_id)
        if old is not None and old.filled_qty > 0:
            return old
        return self.submit(request)

    def open_bar(self, ts_ns: int, opens: Mapping[str, float]) -> None:  # noqa: B027
        """A bar opened at these prices. A venue whose market is simulated (paper) fills its
        market orders here; a real venue's market moves by itself, so this does nothing."""

    def trade_bar(self, ts_ns: int, ranges: Mapping[str, tuple[float, float, float]]) -> None:  # noqa: B027
        """The rest of a bar traded: ``{symbol: (open, high, low)}``. A simulated venue
        executes its resting orders on this range; a real venue has already done so."""

    def quantity_step(self, symbol: str) -> float:
        """The smallest quantity increment the venue accepts for ``symbol`` (0: any). Entry
        sizes are rounded down to it before they are sent, so what fills is what was sent."""
        return 0.0

    def stream_fills(self, on_fill: Callable[[BrokerFill], None]) -> Callable[[], None]:
        """Call ``on_fill`` for each execution as the venue pushes it, until the returned stop
        function is called; reconnects and backfills with ``fills`` after silence. Venues
        without a stream (``"stream"`` not in capabilities) are polled by the caller."""
        raise NotImplementedError(f"{self.venue}: no fill stream; poll fills() instead")

    def close(self) -> None:  # noqa: B027 - optional hook; most adapters hold nothing to close
        """Release connections."""
