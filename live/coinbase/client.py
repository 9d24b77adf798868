"""The Coinbase Advanced Trade adapter: the broker contract over coinbase-advanced-py's RESTClient
(balances, orders, fills, candles); credentials and error mapping are in ``transport``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from coinbase.rest import RESTClient

from live.broker import (
    Account,
    Broker,
    BrokerAuthError,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerRejectedError,
    OrderRequest,
    OrderStatus,
    venue_answer,
)
from live.coinbase import parse
from live.coinbase.config import CoinbaseConfig
from live.coinbase.groups import ProtectiveGroups, is_group_id
from live.coinbase.stream import FillStream
from live.coinbase.transport import (
    VENUE,
    Credentials,
    OrderNotFoundError,
    call_venue,
    load_credentials,
    rest_client,
)

PAGE_LIMIT = 250
logger = logging.getLogger(__name__)
T = TypeVar("T")


def _reads(method: Callable[..., T]) -> Callable[..., T]:
    """Read the venue's answers in ``method`` through ``venue_answer``: one that does not
    parse is a ``BrokerUnavailableError`` saying so, not a parser's traceback."""

    @functools.wraps(method)
    def reading(self, *args: Any, **kwargs: Any) -> T:
        with venue_answer(VENUE, method.__name__.strip("_").replace("_", " ")):
            return method(self, *args, **kwargs)

    return reading


# ----------------------------------------------------------------------------- the broker
class CoinbaseBroker(Broker):
    """Coinbase Advanced Trade (spot) behind the broker contract.

    Client order ids: every create sends the request's id, never an empty one (the SDK would
    replace it with a random UUID, and a resubmission would then trade twice). Coinbase cannot
    look an order up by client order id, so the adapter keeps a map client id -> order id from
    its own creates, the user channel and every order list it reads; an id it has not seen is
    searched in ``list_orders`` (``lookup_window_s``, ``lookup_max_pages``). After an ambiguous
    create that search finds the order if it landed, and ``None`` means it never did.

    Protective legs (requests with an ``oco_group``) rest as one venue order per group
    (``live.coinbase.groups``: a trigger bracket, a stop-limit or a limit) and are reported leg
    by leg; ``open_bar`` and ``trade_bar`` move a trailing leg's stop as the price makes a new
    best (on a real venue the runner calls them after the bar, so the stop resting during a bar
    is the one set from the bars before it).

    Parameters
    ----------
    config : CoinbaseConfig
        Mode, endpoints, key sources, timeouts and backoff. Nothing is read or sent until
        ``connect`` (or the first call).
    """

    venue = VENUE
    capabilities = frozenset({"market", "limit", "stop", "trailing_stop", "oco", "bracket",
                              "stream"})  # fmt: skip
    """``trailing_stop`` and ``oco`` only as legs of an OCO group (``live.coinbase.groups``):
    Coinbase has no trailing-stop order, and its one-of-two exit is the trigger bracket."""
    supports_resting_protection = True
    triggered_stops_may_rest = True
    """A lone stop rests as a stop-limit ``stop_limit_slippage_bps`` past its level, a
    bracket's stop as one 5% past it: a gap beyond that limit leaves the stop unfilled."""

    def __init__(self, config: CoinbaseConfig) -> None:
        self.config = config
        self._credentials: Credentials | None = None
        self._rest: RESTClient | None = None
        self._lock = threading.Lock()
        self._order_ids: dict[str, str] = {}
        self._client_ids: dict[str, str] = {}
        self.groups = ProtectiveGroups(self._create, self._cancel_venue, self._find,
                                       config.stop_limit_slippage_bps)  # fmt: skip

    def __repr__(self) -> str:
        return f"CoinbaseBroker(mode={self.config.mode!r}, base_url={self.config.base_url!r})"

    # ------------------------------------------------------------------ plumbing
    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = load_credentials(self.config)
        return self._credentials

    @property
    def rest(self) -> RESTClient:
        """The SDK client (built on first use)."""
        if self._rest is None:
            self._rest = rest_client(self.config, self.credentials)
        return self._rest

    def _call(self, what: str, call: Callable[[], T], *, sends: bool = False) -> T:
        return call_venue(self.config, what, call, sends=sends, auth_hint=self.credentials.hint)

    def remember(self, client_order_id: str, venue_order_id: str) -> None:
        """Record which venue order carries ``client_order_id`` (for lookups and fills)."""
        if not venue_order_id:
            return
        with self._lock:
            # An order placed elsewhere (web UI) has no client id: remember that too, so its
            # fills are not looked up again on every backfill.
            self._client_ids[venue_order_id] = client_order_id
            if client_order_id:
                self._order_ids[client_order_id] = venue_order_id

    def _pages(self, what: str, call: Callable[[str | None], Any], key: str, max_pages: int):
        cursor = None
        for _ in range(max_pages):
            page = self._call(what, lambda c=cursor: call(c)).to_dict()
            yield from page.get(key) or []
            cursor = page.get("cursor")
            if not cursor or page.get("has_next") is False:
                return

    # ------------------------------------------------------------------ account
    @_reads
    def connect(self) -> Account:
        """Check the keys (401/403 -> ``BrokerAuthError``) and their trade permission, then
        return the account. The mode was checked against the host by the config."""
        permissions = self._call("key permissions", self.rest.get_api_key_permissions).to_dict()
        if permissions.get("can_trade") is False:
            raise BrokerAuthError(
                VENUE, f"the API key cannot trade ({self.credentials.hint}); grant it 'trade'"
            )
        self._raw_open_orders()  # adopts the protective groups resting at the venue
        return self.account()

    def _balances(self) -> parse.Balances:
        accounts = self._pages(
            "list accounts",
            lambda c: self.rest.get_accounts(limit=PAGE_LIMIT, cursor=c),
            "accounts",
            self.config.lookup_max_pages,
        )
        return parse.balances(accounts, self.config.quote_currency)

    @_reads
    def account(self) -> Account:
        balances = self._balances()
        value = 0.0
        if balances.units:
            products = self._call(
                "list products",
                lambda: self.rest.get_products(product_ids=sorted(balances.units)),
            ).to_dict()
            prices = {p["product_id"]: float(p.get("price") or 0.0) for p in products["products"]}
            value = sum(units * prices.get(s, 0.0) for s, units in balances.units.items())
        return Account(
            cash=balances.cash,
            equity=balances.cash + value,
            buying_power=balances.available_cash,
            currency=self.config.quote_currency,
        )

    @_reads
    def positions(self) -> dict[str, float]:
        """Units owned per product (``BTC`` -> ``"BTC-USD"``), available plus held."""
        return dict(self._balances().units)

    @_reads
    def products(self) -> dict[str, dict[str, Any]]:
        """Tradable spot products by id, with the venue's increments and minimum sizes."""
        answer = self._call("list products", lambda: self.rest.get_products(product_type="SPOT"))
        return {p["product_id"]: p for p in answer.to_dict().get("products") or []}

    @_reads
    def quantity_step(self, symbol: str) -> float:
        """The product's ``base_increment`` (e.g. 0.00000001 BTC)."""
        steps = self.__dict__.setdefault("_steps", {})
        if symbol not in steps:
            product = self._call(f"product {symbol}", lambda: self.rest.get_product(symbol))
            steps[symbol] = float(product.to_dict().get("base_increment") or 0.0)
        return steps[symbol]

    # ------------------------------------------------------------------ orders
    def submit(self, request: OrderRequest) -> BrokerOrder:
        """Create the order under ``request.client_order_id``; an id seen before is adopted.

        Raises
        ------
        ValueError
            An empty client order id (never sent: the SDK would replace it with a random one).
        BrokerRejectedError
            The venue answered ``success: false`` (other than a duplicate id) or the request
            cannot be expressed on Coinbase.
        BrokerAmbiguousError
            Timeout, connection loss or 5xx: resolve with ``order(client_order_id)``.
        """
        cid = request.client_order_id
        if not isinstance(cid, str) or not cid.strip():
            raise ValueError(
                "coinbase: refusing an order without client_order_id (the SDK would send a "
                "random one and a resubmission could not be recognised)"
            )
        try:
            if request.oco_group is not None:
                if self.groups.find(cid) is None and request.oco_group not in self.groups.groups:
                    self._find(cid)  # a restarted process: adopts the leg's group if it exists
                return self.groups.add(request)
            configuration = parse.order_configuration(request)
        except ValueError as exc:
            raise BrokerRejectedError(VENUE, str(exc).removeprefix("coinbase: ")) from None
        return self._create(cid, request.symbol, request.side, configuration, request)

    def _create(
        self,
        cid: str,
        symbol: str,
        side: str,
        configuration: dict,
        request: OrderRequest | None = None,
    ) -> BrokerOrder:
        """Create one venue order under client order id ``cid``; a known id is adopted."""
        known = self._order_ids.get(cid)
        if known is not None:
            return self._get(known)
        what = f"create order {cid}"
        answer = self._call(
            what,
            lambda: self.rest.create_order(
                client_order_id=cid,
                product_id=symbol,
                side=parse.VENUE_SIDES[side],
                order_configuration=configuration,
            ),
            sends=True,
        )
        with venue_answer(VENUE, what, sends=True):
            result = parse.create_result(answer.to_dict())
        if result.success:
            self.remember(cid, result.order_id)
            try:
                return self._get(result.order_id)
            except BrokerError as exc:  # it exists; report it as accepted, details later
                logger.warning("coinbase %s: accepted, but reading it back failed: %s", what, exc)
                return _accepted(cid, symbol, side, configuration, result.order_id)
        # A duplicate id means the order exists: adopt it. Any other failure is still checked
        # against the venue, so a retried create whose first attempt landed is never rejected.
        existing = self._find(cid)
        if existing is not None and existing.status != OrderStatus.REJECTED:
            if not result.duplicate:
                logger.warning("coinbase %s: %s; the order exists: adopted", what, result.reason)
            return existing
        raise BrokerRejectedError(VENUE, f"{what}: {result.reason}")

    @_reads
    def _get(self, venue_order_id: str) -> BrokerOrder:
        answer = self._call(
            f"get order {venue_order_id}", lambda: self.rest.get_order(venue_order_id)
        )
        order = parse.order_from_venue(answer.to_dict()["order"])
        self.remember(order.client_order_id, order.venue_order_id)
        return order

    @_reads
    def order(self, client_order_id: str) -> BrokerOrder | None:
        """Look an order up by client order id: the known order id, else a search of
        ``list_orders`` newest first. None if the venue never received it. A protective leg
        is reported as its group's order shows it (``live.coinbase.groups``)."""
        view = self.groups.view(client_order_id)
        if view is not None:
            return view
        found = self._find(client_order_id)
        if found is None:
            return self.groups.view(client_order_id)  # the search met its group's orders
        return found

    def _find(self, client_order_id: str) -> BrokerOrder | None:
        """One venue order by its own client order id (see ``order``)."""
        venue_order_id = self._order_ids.get(client_order_id)
        if venue_order_id is not None:
            try:
                return self._get(venue_order_id)
            except OrderNotFoundError:
                return None
        start = time.time_ns() - int(self.config.lookup_window_s * 1e9)
        for raw in self._pages(
            f"find order {client_order_id}",
            lambda c: self.rest.list_orders(
                limit=PAGE_LIMIT, start_date=parse.ns_to_rfc3339(start), cursor=c
            ),
            "orders",
            self.config.lookup_max_pages,
        ):
            self.remember(raw.get("client_order_id") or "", raw["order_id"])
            order = parse.order_from_venue(raw)
            if raw.get("client_order_id") == client_order_id:
                return order
            group = self.groups.adopt(order.client_order_id, order)
            if group is not None and group.holds(client_order_id):
                return None  # the leg of a group: ``order`` reports it
        return None

    @_reads
    def open_orders(self) -> list[BrokerOrder]:
        """Open orders; a protective group's order is listed as its legs."""
        out = []
        for order in self._raw_open_orders():
            group = self.groups.adopt(order.client_order_id, order)
            if group is None:
                out.append(order)
            else:
                out += [group.view(cid, order) for cid in group.ids.values()]
        return out

    def _raw_open_orders(self) -> list[BrokerOrder]:
        orders = [
            parse.order_from_venue(raw)
            for raw in self._pages(
                "list open orders",
                lambda c: self.rest.list_orders(order_status=["OPEN"], limit=PAGE_LIMIT, cursor=c),
                "orders",
                self.config.lookup_max_pages,
            )
        ]
        for o in orders:
            self.remember(o.client_order_id, o.venue_order_id)
            self.groups.adopt(o.client_order_id, o)
        return [o for o in orders if not o.is_final]

    @_reads
    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        """Cancel the rest of an order and return it once final (or as it stands after
        ``cancel_wait_s``); a final order is returned as it is. A protective leg leaves its
        group (``live.coinbase.groups``)."""
        if self.order(client_order_id) is not None and self.groups.find(client_order_id):
            return self.groups.cancel(client_order_id)
        return self._cancel_venue(client_order_id)

    def replace(self, client_order_id: str, request: OrderRequest) -> BrokerOrder | None:
        """Move a protective leg with one change of its group's order; otherwise the
        contract's cancel, then send."""
        if self.groups.find(client_order_id) is not None:
            return self.groups.replace(client_order_id, request)
        return super().replace(client_order_id, request)

    def open_bar(self, ts_ns: int, opens) -> None:
        """Trailing legs follow the bar's open (the fill model moves a trailing stop to a
        better open before it checks the bar)."""
        self.groups.follow(dict(opens))

    def trade_bar(self, ts_ns: int, ranges) -> None:
        """Trailing legs follow the bar's best price once it has traded: its high for a
        long's, its low for a short's (each group picks its own side)."""
        self.groups.follow({s: r[1] for s, r in ranges.items()}, side="sell")
        self.groups.follow({s: r[2] for s, r in ranges.items()}, side="buy")

    def _cancel_venue(self, client_order_id: str) -> BrokerOrder | None:
        current = self._find(client_order_id)
        if current is None or current.is_final:
            return current
        oid = current.venue_order_id
        answer = self._call(
            f"cancel order {client_order_id}", lambda: self.rest.cancel_orders(order_ids=[oid])
        )
        ok, reason = parse.cancel_result(answer.to_dict(), oid)
        deadline = time.monotonic() + self.config.cancel_wait_s
        while True:
            latest = self._get(oid)
            if latest.is_final or time.monotonic() >= deadline:
                break
            time.sleep(self.config.poll_interval_s)
        if not ok and not latest.is_final:
            raise BrokerRejectedError(VENUE, f"cancel order {client_order_id}: {reason}")
        return latest

    # ------------------------------------------------------------------ fills
    def _client_id_of(self, venue_order_id: str) -> str:
        cid = self._client_ids.get(venue_order_id)
        if cid is None:
            cid = self._get(venue_order_id).client_order_id
        return cid

    @_reads
    def fills(self, since_ns: int = 0) -> list[BrokerFill]:
        since = parse.ns_to_rfc3339(max(since_ns, 0))
        raw = list(
            self._pages(
                "list fills",
                lambda c: self.rest.get_fills(
                    start_sequence_timestamp=since, limit=PAGE_LIMIT, cursor=c
                ),
                "fills",
                self.config.lookup_max_pages,
            )
        )
        out = [self._as_leg(parse.fill_from_venue(f, self._client_id_of(f["order_id"])),
                            f["order_id"]) for f in raw]  # fmt: skip
        return sorted((f for f in out if f.ts_fill_ns >= since_ns), key=_fill_order)

    def _as_leg(self, fill: BrokerFill, venue_order_id: str) -> BrokerFill:
        """A fill of a protective group's order, under the client order id of the leg that
        filled (the group's order carries an id of its own)."""
        group = next((g for g in self.groups.groups.values()
                      if g.current == fill.client_order_id), None)  # fmt: skip
        if group is None and not is_group_id(fill.client_order_id):
            return fill  # not a group's order (e.g. placed by hand): no lookup needed
        order = self._get(venue_order_id)
        group = group or self.groups.adopt(fill.client_order_id, order)
        if group is None:
            return fill
        leg = group.ids.get(group.filled_leg(order))
        return fill if leg is None else replace(fill, client_order_id=leg)

    @_reads
    def order_fills(self, venue_order_id: str, client_order_id: str = "") -> list[BrokerFill]:
        """Every execution of one venue order, oldest first."""
        raw = self._pages(
            f"list fills of {venue_order_id}",
            lambda c: self.rest.get_fills(order_ids=[venue_order_id], limit=PAGE_LIMIT, cursor=c),
            "fills",
            self.config.lookup_max_pages,
        )
        cid = client_order_id or self._client_id_of(venue_order_id)
        fills = [self._as_leg(parse.fill_from_venue(f, cid), venue_order_id) for f in raw]
        return sorted(fills, key=_fill_order)

    def stream_fills(self, on_fill: Callable[[BrokerFill], None]) -> Callable[[], None]:
        """Follow the user channel; each order update with new fills fetches that order's
        fills, and every (re)connect backfills with ``fills``. Each ``fill_id`` is delivered
        once, in time order within a batch. Returns the stop function."""
        return FillStream(self, on_fill).start()

    def close(self) -> None:
        if self._rest is not None:
            self._rest.session.close()


def _fill_order(fill: BrokerFill) -> tuple[int, str]:
    return fill.ts_fill_ns, fill.fill_id


def _accepted(cid: str, symbol: str, side: str, configuration: dict,
              venue_order_id: str) -> BrokerOrder:  # fmt: skip
    kind, inner = parse.order_kind(configuration)
    return BrokerOrder(
        client_order_id=cid,
        venue_order_id=venue_order_id,
        symbol=symbol,
        side=side,
        qty=float(inner["base_size"]),
        order_type=kind,
        status=OrderStatus.OPEN,
        ts_updated_ns=time.time_ns(),
    )
