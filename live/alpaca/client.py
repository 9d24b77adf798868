"""The Alpaca equities broker: alpaca-py's TradingClient and StockHistoricalDataClient behind
the broker contract, with our retry policy and error mapping (fills and the deduplicating fill
stream are in ``live.alpaca.fills``).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockLatestBarRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import Order
from alpaca.trading.requests import GetOrderByIdRequest, GetOrdersRequest

from live.alpaca import trailing
from live.alpaca.config import KEY_ID_NAME, SECRET_KEY_NAME, AlpacaConfig
from live.alpaca.fills import Fills, FillStream
from live.alpaca.parse import (
    VENUE,
    MarketClock,
    account_from_model,
    bars_frame,
    clock_from_model,
    is_paper_account,
    leg_from_model,
    order_from_model,
    order_request_to_sdk,
    positions_from_models,
    protection_to_sdk,
    replace_request_to_sdk,
)
from live.alpaca.trailing import STOP_KINDS, TrailGroups, group_of, needs_folding
from live.broker import (
    LEG_CODES,
    Account,
    Broker,
    BrokerAmbiguousError,
    BrokerAuthError,
    BrokerFill,
    BrokerOrder,
    BrokerRateLimitedError,
    BrokerRejectedError,
    BrokerUnavailableError,
    OrderRequest,
    leg_id,
    leg_of,
    venue_answer,
)
from live.secrets import load_secrets, scrub
from quantshift.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"


class _TimeoutSession(requests.Session):
    """A session with a default timeout: alpaca-py's ``RESTClient`` (common/rest.py) calls
    ``Session.request`` without one, so a hung venue would block forever."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, **kwargs)


def _our_policy(client: Any, timeout_s: float) -> Any:
    """Turn off alpaca-py's own retries so ours are in charge. The SDK retries 429 and 504 three
    times with 3 s waits (common/constants.py) and offers no way to turn that off:
    ``TradingClient`` does not pass ``retry_attempts`` on, ``RESTClient`` ignores 0 and an empty
    code list, and no environment variable is read. A retried 504 on ``POST /orders`` would
    come back as 422 "client_order_id must be unique"; we handle that too (adoption)."""
    client._retry = 0  # one attempt: _one_request raises RetryException only if retry > 0
    client._session = _TimeoutSession(timeout_s)
    return client


def _venue_message(exc: APIError) -> str:
    text = scrub(str(exc))  # before truncating: a cut secret would not be recognised
    try:
        body = json.loads(text)
        return str(body.get("message", body)) if isinstance(body, dict) else str(body)
    except (ValueError, TypeError):
        return text[:200]


_UNREAD = object()
"""``_trail_leg``'s stop order when the caller has not read it."""


class AlpacaBroker(Broker):
    """Alpaca (equities) through alpaca-py.

    Parameters
    ----------
    config : AlpacaConfig
        Mode, secret sources, endpoints, timeouts and backoff.
    sleep : callable
        How to wait between retries (tests pass a recorder).

    Raises
    ------
    ConfigError
        If a key cannot be found (naming the variable and file tried, never a value).
    """

    venue = VENUE
    capabilities = frozenset(
        {"market", "limit", "stop", "trailing_stop", "oco", "bracket", "stream"}
    )
    supports_resting_protection = True
    """A position's protection rests as the one closing order Alpaca takes for its shares
    (``submit_protection``): stop and target as an OCO order, a lone leg as itself, and a
    trailing stop beside a stop or a target folded into the stop (``live.alpaca.trailing``;
    ``open_bar`` and ``trade_bar`` move that stop as the trailing level follows). Alpaca
    rests fractional quantities as DAY orders only, so a sleeve with levels trades whole
    shares (``[costs] whole_units``; the runner checks at start)."""
    protection_needs_whole_units = True

    def __init__(self, config: AlpacaConfig, *, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._sleep = sleep
        self._key_id, self._secret = load_secrets(
            config,
            ((KEY_ID_NAME, "key_id_env"), (SECRET_KEY_NAME, "secret_key_env")),
            f"alpaca broker ({config.mode})",
        )
        self._trading = self._trading_client()
        self._data = _our_policy(
            StockHistoricalDataClient(
                api_key=self._key_id.reveal(),
                secret_key=self._secret.reveal(),
                url_override=config.data_url,
            ),
            config.timeout_s,
        )
        self._fills = Fills(self._call)
        self._streams: list[FillStream] = []
        self._trails = TrailGroups(self, self._fills.remember)

    def __repr__(self) -> str:
        return f"AlpacaBroker(mode={self.config.mode!r}, key from {self._key_id.source})"

    def credentials(self) -> tuple[str, str]:
        """The key id and secret key, revealed for an SDK client of this adapter's own."""
        return self._key_id.reveal(), self._secret.reveal()

    def _trading_client(self) -> TradingClient:
        return _our_policy(
            TradingClient(
                api_key=self._key_id.reveal(),
                secret_key=self._secret.reveal(),
                paper=self.config.paper,  # explicit: the SDK defaults to paper=True
                url_override=self.config.trading_url,
            ),
            self.config.timeout_s,
        )

    # ------------------------------------------------------------------ policy
    def _call(self, what: str, fn: Callable[[], T], *, submit: bool = False) -> T:
        """Run one SDK call under our policy: back off on 429 per the venue's headers, retry
        reads on 5xx / network errors, map auth errors; other ``APIError`` go to the caller.
        On ``submit`` a 5xx or lost answer is ambiguous and never retried."""
        limited = failed = 0
        while True:
            try:
                with venue_answer(VENUE, what, sends=submit):
                    return fn()
            except APIError as exc:
                status = exc.status_code
                if status == 429:
                    limited += 1
                    wait = self._rate_limit_wait(exc.response, limited)
                    if limited >= self.config.rate_limit_attempts:
                        raise BrokerRateLimitedError(
                            VENUE, f"{what}: rate limited {limited} times in a row", wait
                        ) from None
                    log.warning("alpaca %s: rate limited, retrying in %.3fs", what, wait)
                    self._sleep(wait)
                    continue
                if status == 401 or (status == 403 and not submit):
                    raise self._auth_error(what, status, _venue_message(exc)) from None
                if status is not None and status < 500:
                    raise
                problem = f"HTTP {status} {_venue_message(exc)}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"no answer ({type(exc).__name__})"
            if submit:
                raise BrokerAmbiguousError(
                    VENUE, f"{what}: {problem}; the order may exist, look it up by client order id"
                )
            failed += 1
            if failed >= self.config.read_attempts:
                raise BrokerUnavailableError(VENUE, f"{what}: {problem} ({failed} attempts)")
            self._sleep(
                min(self.config.retry_base_s * 2 ** (failed - 1), self.config.max_backoff_s)
            )

    def _rate_limit_wait(self, response: requests.Response | None, attempt: int) -> float:
        """Seconds to wait after a 429: ``Retry-After`` (seconds or HTTP date), else Alpaca's
        ``X-RateLimit-Reset`` (epoch seconds), else exponential; capped at ``max_backoff_s``."""
        wait = self.config.retry_base_s * 2 ** (attempt - 1)
        headers = response.headers if response is not None else {}
        retry_after, reset = headers.get("Retry-After"), headers.get("X-RateLimit-Reset")
        try:
            if retry_after is not None:
                if retry_after.strip().isdigit():
                    wait = float(retry_after)
                else:
                    wait = email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time()
            elif reset is not None:
                wait = float(reset) - time.time()
        except (TypeError, ValueError):
            pass  # a malformed header: keep the exponential wait
        return min(max(wait, 0.0), self.config.max_backoff_s)

    def _auth_error(self, what: str, status: int, message: str) -> BrokerAuthError:
        return BrokerAuthError(
            VENUE,
            f"{what}: HTTP {status} {message}; check the {self.config.mode} key id from "
            f"{self._key_id.source} and secret key from {self._secret.source}",
        )

    # ------------------------------------------------------------------ the contract
    def connect(self) -> Account:
        """Check the keys, and that the SDK client and the account agree with ``mode``."""
        if self._trading._sandbox != self.config.paper:
            raise ConfigError(
                f"alpaca broker: SDK paper flag disagrees with mode {self.config.mode!r}"
            )
        account = self._call("connect", self._trading.get_account)
        with venue_answer(VENUE, "connect"):
            paper_account = is_paper_account(account)
        if paper_account != self.config.paper:
            kind = "paper" if paper_account else "live"
            raise ConfigError(
                f"alpaca broker: mode is {self.config.mode!r} but account "
                f"{account.account_number} is a {kind} account; fix [broker] mode or the keys"
            )
        if account.trading_blocked or account.account_blocked:
            raise BrokerAuthError(
                VENUE, f"account {account.account_number} is blocked from trading"
            )
        with venue_answer(VENUE, "connect"):
            return account_from_model(account)

    def account(self) -> Account:
        answer = self._call("account", self._trading.get_account)
        with venue_answer(VENUE, "account"):
            return account_from_model(answer)

    def positions(self) -> dict[str, float]:
        answer = self._call("positions", self._trading.get_all_positions)
        with venue_answer(VENUE, "positions"):
            return positions_from_models(answer)

    def quantity_step(self, symbol: str) -> float:
        """Fractionable assets trade to 9 decimals (market and day orders), others in shares."""
        steps = self.__dict__.setdefault("_steps", {})
        if symbol not in steps:
            asset = self._call(f"asset {symbol}", lambda: self._trading.get_asset(symbol))
            steps[symbol] = 1e-9 if getattr(asset, "fractionable", False) else 1.0
        return steps[symbol]

    def market_clock(self) -> MarketClock:
        """Whether the US equity market is open now, and its next open and close (UTC)."""
        answer = self._call("clock", self._trading.get_clock)
        with venue_answer(VENUE, "clock"):
            return clock_from_model(answer)

    def submit(self, request: OrderRequest) -> BrokerOrder:
        """Send ``request``; a client order id Alpaca already has is adopted, not rejected.

        Raises
        ------
        BrokerAmbiguousError
            On a timeout, lost connection or 5xx: resolve with ``order(client_order_id)``.
        BrokerRejectedError
            On a definite refusal (422, 403 such as insufficient buying power, other 4xx).
        """
        cid = request.client_order_id
        if request.oco_group is not None and leg_of(cid) is not None:
            return self.submit_protection([request])[0]
        try:
            sdk_request = order_request_to_sdk(request)
        except ValueError as exc:
            raise BrokerRejectedError(VENUE, f"order {cid}: {exc}") from None
        placed = self._send(cid, sdk_request)
        with venue_answer(VENUE, f"submit {cid}", sends=True):
            return order_from_model(placed)

    def submit_protection(self, requests: list[OrderRequest]) -> list[BrokerOrder]:
        """Send a position's protective legs as the one closing order Alpaca takes for its
        shares (it refuses a second with "insufficient qty available"): a stop and a target as
        one OCO order, a single leg as itself, under the group's id (``leg_id(group,
        "group")``); each leg is then found by its own id (``order``). A trailing stop beside
        a stop or a target is folded into the stop at the tighter level (an OCO with the
        target, else a stop order), moved as the trailing level follows (``open_bar``,
        ``trade_bar``; ``live.alpaca.trailing``).

        Raises
        ------
        BrokerRejectedError
            If the legs cannot be one Alpaca order (legs of different symbols, sides or
            quantities, a trailing stop beside others without ``trail_from_price``) or Alpaca
            refuses it.
        """
        found = leg_of(requests[0].client_order_id)
        if found is None or any(
            leg_of(r.client_order_id) != (found[0], r.order_type) for r in requests
        ):
            raise BrokerRejectedError(
                VENUE, f"order {requests[0].client_order_id}: protective legs need leg_id ids"
            )
        venue_id, trail = leg_id(found[0], "group"), None
        sent = requests
        try:
            if needs_folding(requests):
                known = self._trails.groups.get(found[0])
                if known is not None:  # a redo: the group rests (and may have moved) already
                    return self._trail_legs(known, [r.client_order_id for r in requests])
                trail = group_of(requests, found[0])
                sent = [trail.stop_request(),
                        *(r for r in requests if r.order_type == "limit")]  # fmt: skip
                venue_id = trail.carrier
            sdk_request = protection_to_sdk(venue_id, sent)
        except ValueError as exc:
            raise BrokerRejectedError(VENUE, str(exc)) from None
        placed = self._send(venue_id, sdk_request)
        try:
            placed = self._with_legs(placed)
        except BrokerUnavailableError as exc:
            raise BrokerAmbiguousError(
                VENUE, f"{exc}; order {venue_id} was sent, look its legs up by id"
            ) from None
        with venue_answer(VENUE, f"submit {venue_id}", sends=True):
            if trail is not None:
                self._trails.rested(trail, leg_from_model(placed, "stop", venue_id))
                legs = self._trail_legs(trail, [r.client_order_id for r in requests], placed)
            else:
                legs = [self._leg(placed, r.client_order_id) for r in requests]
        if any(leg is None for leg in legs):
            raise BrokerRejectedError(
                VENUE, f"order {venue_id}: the venue holds other legs for this group"
            )
        return legs

    def _with_legs(self, order: Order) -> Order:
        """``order`` with its child orders. Alpaca lists them (``legs``) only when asked
        nested: GET /v2/orders and GET /v2/orders/{id} take ``nested``, the lookup by client
        order id does not (alpacahq/alpaca-docs data/webapi/endpoints/orders.yaml), and the
        order entity's ``legs`` is null outside a nested query (alpaca-py trading/models.py)."""
        kind = getattr(order.order_class, "value", order.order_class)
        if order.legs or kind in (None, "", "simple"):
            return order
        query = GetOrderByIdRequest(nested=True)
        return self._call(
            f"order id {order.id}", lambda: self._trading.get_order_by_id(order.id, query)
        )

    def _trail_leg(self, group, client_order_id: str, carrier: Order | None = None,
                   stop=_UNREAD) -> BrokerOrder | None:  # fmt: skip
        """Leg ``client_order_id`` of a folded group (``live.alpaca.trailing``): the target
        from the OCO order that carries it, the stop and the trailing stop from the stop order
        resting for them now (``stop``, when the caller has read it)."""
        kind = leg_of(client_order_id)[1]
        if kind in STOP_KINDS:
            if stop is _UNREAD:
                stop = self._trails.stop_order(group)
            return None if stop is None else group.view(kind, client_order_id, stop)
        if carrier is None:
            carrier = self._order_model(group.carrier)
            if carrier is None:
                return None
            carrier = self._with_legs(carrier)
        return self._leg(carrier, client_order_id)

    def _trail_legs(self, group, client_order_ids=None, carrier: Order | None = None
                    ) -> list[BrokerOrder | None]:  # fmt: skip
        """Legs ``client_order_ids`` (default: all the group's) of a folded group, its stop
        order read once for the stop and the trailing stop."""
        ids = client_order_ids or [leg_id(group.key, k) for k in group.kinds()]
        stop = _UNREAD
        if any(leg_of(cid)[1] in STOP_KINDS for cid in ids):
            stop = self._trails.stop_order(group)
        return [self._trail_leg(group, cid, carrier, stop) for cid in ids]

    def open_bar(self, ts_ns: int, opens) -> None:
        """Folded trailing stops follow the bar's open (the fill model moves a trailing stop
        to a better open before it checks the bar)."""
        self._trails.follow(dict(opens))

    def trade_bar(self, ts_ns: int, ranges) -> None:
        """Folded trailing stops follow the bar's best price once it has traded: its high for
        a long's, its low for a short's."""
        self._trails.follow({s: r[1] for s, r in ranges.items()}, side="sell")
        self._trails.follow({s: r[2] for s, r in ranges.items()}, side="buy")

    def _leg(self, order: Order, client_order_id: str) -> BrokerOrder | None:
        leg = leg_from_model(order, leg_of(client_order_id)[1], client_order_id)
        if leg is not None:  # the venue names a leg's fills by its venue id only
            self._fills.remember(leg.venue_order_id, client_order_id)
        return leg

    def _send(self, cid: str, sdk_request) -> Order:
        """Submit one SDK request under ``cid``; a duplicate id is adopted (looked up)."""
        try:
            return self._call(
                f"submit {cid}", lambda: self._trading.submit_order(sdk_request), submit=True
            )
        except APIError as exc:
            message = _venue_message(exc)
            if exc.status_code == 422 and DUPLICATE_CLIENT_ORDER_ID in message:
                existing = self._order_model(cid)
                if existing is None:
                    raise BrokerAmbiguousError(
                        VENUE, f"order {cid}: venue reports a duplicate it cannot find yet"
                    ) from None
                log.info("alpaca: adopted existing order %s", cid)
                return existing
            raise BrokerRejectedError(
                VENUE, f"order {cid}: HTTP {exc.status_code} {message}"
            ) from None

    def replace(self, client_order_id: str, request: OrderRequest) -> BrokerOrder | None:
        """Move a resting order to ``request`` in one PATCH (Alpaca's atomic replace: the old
        order ends ``replaced``, never both working). An order that filled first is returned
        as it ended and nothing is sent; one that is gone without a fill is sent anew.

        Raises
        ------
        BrokerRejectedError
            If Alpaca cannot make the change (another symbol, side or type, a fractional
            quantity) or refuses it.
        BrokerAmbiguousError
            On a lost answer: look ``request.client_order_id`` up.
        """
        current = self.order(client_order_id)
        if current is None or current.is_final:
            if current is not None and current.filled_qty > 0:
                return current
            return self.submit(request)
        cid = request.client_order_id
        try:
            patch = replace_request_to_sdk(current, request)
        except ValueError as exc:
            raise BrokerRejectedError(VENUE, str(exc)) from None
        try:
            placed = self._call(
                f"replace {client_order_id}",
                lambda: self._trading.replace_order_by_id(current.venue_order_id, patch),
                submit=True,
            )
        except APIError as exc:
            message = _venue_message(exc)
            if exc.status_code == 422:
                existing = self.order(cid)  # a replace that landed before (a redo)
                if existing is not None:
                    return existing
                ended = self.order(client_order_id)
                if ended is not None and ended.filled_qty > 0:
                    return ended  # filled before the replace landed
            raise BrokerRejectedError(
                VENUE, f"replace {client_order_id} by {cid}: HTTP {exc.status_code} {message}"
            ) from None
        with venue_answer(VENUE, f"replace {client_order_id}", sends=True):
            return order_from_model(placed)

    def order(self, client_order_id: str) -> BrokerOrder | None:
        """Look an order up by client order id; a protective leg through the venue order that
        carries its group (``submit_protection``)."""
        leg = leg_of(client_order_id)
        if leg is not None and leg[1] != "group" and leg[0] in self._trails.groups:
            return self._trail_leg(self._trails.groups[leg[0]], client_order_id)
        if leg is not None and leg[1] != "group":
            carrier = self._order_model(leg_id(leg[0], "group"))
            if carrier is not None:
                carrier = self._with_legs(carrier)
                with venue_answer(VENUE, f"order {client_order_id}"):
                    return self._leg(carrier, client_order_id)
            group = self._trails.recover(leg[0])
            if group is not None:
                return self._trail_leg(group, client_order_id)
        found = self._order_model(client_order_id)
        if found is None:
            return None
        with venue_answer(VENUE, f"order {client_order_id}"):
            return order_from_model(found)

    def _order_model(self, client_order_id: str) -> Order | None:
        return self._found(
            f"order {client_order_id}",
            lambda: self._trading.get_order_by_client_id(client_order_id),
        )

    def _found(self, what: str, call) -> Order | None:
        """The order ``call`` reads, or None when the venue has no such order (HTTP 404)."""
        try:
            return self._call(what, call)
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise BrokerUnavailableError(
                VENUE, f"{what}: HTTP {exc.status_code} {_venue_message(exc)}"
            ) from None

    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        """Cancel and wait (up to ``timeout_s``) for Alpaca's asynchronous cancel to land."""
        current = self.order(client_order_id)
        if current is None or current.is_final:
            return current
        try:
            self._call(
                f"cancel {client_order_id}",
                lambda: self._trading.cancel_order_by_id(current.venue_order_id),
            )
        except APIError as exc:
            if exc.status_code not in (404, 422):  # 422: already final (filled meanwhile)
                raise BrokerUnavailableError(
                    VENUE, f"cancel {client_order_id}: HTTP {exc.status_code} {_venue_message(exc)}"
                ) from None
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            current = self.order(client_order_id)
            if current is None or current.is_final or time.monotonic() > deadline:
                return current
            time.sleep(0.02)

    def open_orders(self) -> list[BrokerOrder]:
        """Open orders; one carrying a position's protection is listed as its legs."""
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, nested=True)
        found = self._call("open orders", lambda: self._trading.get_orders(query))
        out: list[BrokerOrder] = []
        trails, listed = self._trails.groups, set()
        with venue_answer(VENUE, "open orders"):
            for order in found:
                folded = trailing.decode(order.client_order_id)
                if folded is not None:  # a folded group's order: listed as its legs
                    group = trails.get(folded["key"]) or self._trails.recover(folded["key"])
                    if group is not None and not group.done and group.key not in listed:
                        listed.add(group.key)
                        out.extend(leg for leg in self._trail_legs(group) if leg is not None)
                    continue
                carrier = leg_of(order.client_order_id)
                if carrier is None or carrier[1] != "group":
                    out.append(order_from_model(order))
                    continue
                legs = (self._leg(order, leg_id(carrier[0], k)) for k in LEG_CODES)
                out.extend(leg for leg in legs if leg is not None)
        return [o for o in out if not o.is_final]

    def fills(self, since_ns: int = 0) -> list[BrokerFill]:
        """FILL account activities at or after ``since_ns``, oldest first, each under the
        client order id it is ours by (a protective leg's by its leg id)."""
        return self._fills.from_activities(self._trading, since_ns)

    def latest_bar(self, symbol: str) -> pd.DataFrame:
        """The latest minute bar of ``symbol`` (one row of the ``bar_pages`` columns)."""
        query = StockLatestBarRequest(
            symbol_or_symbols=symbol, feed=DataFeed(self.config.data_feed)
        )
        found = self._call(f"latest bar {symbol}", lambda: self._data.get_stock_latest_bar(query))
        rows = [
            {"t": b.timestamp, "o": b.open, "h": b.high, "l": b.low, "c": b.close, "v": b.volume}
            for b in (found.get(symbol),)
            if b is not None
        ]
        return bars_frame(rows)

    def stream_fills(self, on_fill: Callable[[BrokerFill], None]) -> Callable[[], None]:
        """Deliver each execution once from the ``trade_updates`` WebSocket (reconnecting and
        backfilling from ``fills`` after silence or a drop); return the stop function."""
        stream = FillStream(self, on_fill)
        self._streams.append(stream)
        stream.start()
        return stream.stop

    def close(self) -> None:
        for stream in self._streams:
            stream.stop()
        self._streams.clear()
        for client in (self._trading, self._data):
            client._session.close()
