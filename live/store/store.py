"""The live store: order intents, orders, fills, trades, positions and equity, fenced by epoch.

One API over SQLite (embedded, single host) and PostgreSQL (production); see :class:`Store`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from live.store import checks
from live.store.bars import BarBook
from live.store.db import Database, parse_url
from live.store.errors import (
    HaltedError,
    IllegalTransitionError,
    StoreMissingError,
    UnknownOrderError,
)
from live.store.identity import Identity, pin_instance
from live.store.ids import SIDES
from live.store.ids import client_order_id as make_client_order_id
from live.store.locks import RunnerLock
from live.store.migrate import is_store, migrate
from live.store.operations import Operations
from live.store.outbox import Outbox, enqueue
from live.store.promotions import PromotionBook
from live.store.records import (
    PORTFOLIO,
    TRANSITIONS,
    BrokerOrder,
    EquitySnapshot,
    Fill,
    Intent,
    OrderEvent,
    OrderState,
    Position,
    Trade,
    is_legal,
)
from quantshift.errors import ConfigError

ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
DIRECTIONS = ("long", "short")
_FILLED_TOLERANCE = 1e-9  # relative: float sums of partial fills may miss the total by an ulp
_OPEN_STATES = tuple(s.value for s in OrderState if TRANSITIONS[s])


class Store(Operations, PromotionBook, Identity, Outbox, BarBook):
    """Persistent state of the live runner on SQLite or PostgreSQL, one schema for both.

    Open with :meth:`Store.open`. Writes that cause or record trading (intents, transitions,
    fills, trades, positions, equity) take the writer's leader ``epoch`` and are **fenced**:
    the store keeps the highest epoch it has seen, rejects a lower one with
    :class:`~live.store.errors.StaleEpochError` and changes nothing, all inside the write's
    own transaction. Epoch 0 (or None) is single-host mode without a lease; once a leased
    leader has written (epoch >= 1), lease-less writers are refused too.

    Every method runs in its own transaction and never calls out to a broker: the runner
    commits an intent, then calls the broker, then records the answer. A
    :class:`~live.store.errors.StoreUnavailableError` from a write means the outcome is
    unknown (the connection may have dropped during COMMIT): re-read before acting; every
    write is idempotent or compare-and-set, so repeating it is safe.
    """

    def __init__(self, db: Database, schema_version: int):
        self._db = db
        self._schema_version = schema_version

    @classmethod
    def open(cls, url: str, *, timeout_s: float = 10.0, create: bool = True) -> Store:
        """Open the store at ``url`` and apply pending schema migrations.

        The open store is pinned to its database: if that is deleted or replaced while open,
        every later call raises :class:`~live.store.errors.StoreReplacedError`.

        Parameters
        ----------
        url : str
            ``sqlite:///path.db`` (relative), ``sqlite:////abs/path.db``, ``sqlite:///:memory:``
            or ``postgresql://user[:password]@host[:port]/database``.
        timeout_s : float
            Longest wait for the connection or another writer's lock.
        create : bool
            Whether to create the store if there is none (False: commands that act on an
            existing store, such as ``live halt``, must never report on a new, empty one).

        Raises
        ------
        ConfigError
            On a malformed URL.
        StoreMissingError
            With ``create=False``, when there is no store at ``url``.
        StoreCorruptError
            When the SQLite file is damaged.
        StoreVersionError
            When the database's schema is newer than this code.
        StoreUnavailableError
            When the database cannot be reached.
        """
        db = Database(
            parse_url(url),
            timeout_s=checks.finite("timeout_s", timeout_s, positive=True),
            create=create,
        )
        try:
            if not create and not is_store(db):
                raise StoreMissingError(
                    f"no live store at {db.url.path or db.url.shown} (the database holds no "
                    "store): `live run` creates it; check [store] url in the config"
                )
            version = migrate(db)
            pin_instance(db)
        except BaseException:
            db.close()
            raise
        return cls(db, version)

    @property
    def url(self) -> str:
        """The store URL with any password masked."""
        return self._db.url.shown

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    @property
    def schema_version(self) -> int:
        """The schema version of the database (the latest this code knows)."""
        return self._schema_version

    def __repr__(self) -> str:
        return f"Store({self.url!r}, schema_version={self._schema_version})"

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def single_runner_lock(self) -> RunnerLock:
        """Return the lock that keeps a second runner off this store (hosts without Redis).

        SQLite: ``flock`` on ``<database>.lock``; PostgreSQL: ``pg_try_advisory_lock`` on a
        key derived from the database name, on a dedicated session. Both are released when
        the holding process dies. Use ``with store.single_runner_lock(): run()``; a held
        lock raises :class:`~live.store.errors.RunnerLockedError` at once.
        """
        return RunnerLock(self._db.url, timeout_s=self._db.timeout_s)

    # ------------------------------------------------------------------ the fence
    def fence_epoch(self) -> int:
        """Return the highest leader epoch the store has seen."""
        with self._db.read("read fence") as tx:
            return int(tx.one("SELECT epoch FROM leader_fence WHERE id = 1")["epoch"])

    def claim_epoch(self, epoch: int, by: str | None = None) -> int:
        """Raise the fence to ``epoch`` (a new leader calls this first, so that the old
        leader's next write fails); return it. Raises StaleEpochError if a higher epoch was
        already seen. The new term is noted in the notification outbox (``by``: the host)."""
        epoch = checks.epoch_of(epoch)
        with self._db.write(f"claim of epoch {epoch}", epoch) as tx:
            who = by or "a runner"
            if epoch:  # epoch 0 is a single host without a lease: no term to announce
                enqueue(
                    tx, key=f"takeover:{epoch}", kind="takeover",
                    title=f"{who} leads with epoch {epoch}",
                    body=f"{who} took the lease and fenced the store at epoch {epoch}",
                    ts_ns=time.time_ns(),
                )  # fmt: skip
            return epoch

    # ------------------------------------------------------------------ intents and orders
    def record_intent(
        self,
        *,
        sleeve: str,
        symbol: str,
        side: str,
        qty: float,
        bar_ts_ns: int,
        venue: str,
        epoch: int | None,
        order_type: str = "market",
        limit_price: float | None = None,
        stop_price: float | None = None,
        ts_decided_ns: int | None = None,
        details: Mapping[str, Any] | None = None,
        client_order_id: str | None = None,
    ) -> Intent:
        """Commit an order intent in state NEW, before the broker is called; return it.

        The ``client_order_id`` defaults to :func:`~live.store.ids.client_order_id` of
        (sleeve, symbol, bar_ts_ns, side); pass one computed with the venue's length limit
        to override. Recording an intent whose id exists is a no-op that returns the stored
        row unchanged (the first decision wins): act on the returned row's state and
        quantity, never on the arguments.
        """
        sleeve, symbol = checks.text("sleeve", sleeve), checks.text("symbol", symbol)
        side = checks.choice("side", side, SIDES)
        bar_ts_ns = checks.integer("bar_ts_ns", bar_ts_ns)
        cid = client_order_id or make_client_order_id(sleeve, symbol, bar_ts_ns, side)
        epoch = checks.epoch_of(epoch)
        now = time.time_ns()
        decided = now if ts_decided_ns is None else checks.integer("ts_decided_ns", ts_decided_ns)
        row = (
            checks.text("client_order_id", cid), sleeve, symbol, side,
            checks.finite("qty", qty, positive=True),
            checks.choice("order_type", order_type, ORDER_TYPES),
            checks.finite("limit_price", limit_price, positive=True, optional=True),
            checks.finite("stop_price", stop_price, positive=True, optional=True),
            checks.text("venue", venue), bar_ts_ns, decided, epoch, OrderState.NEW.value, 0.0, None,
            decided, checks.dumps("details", details),
        )  # fmt: skip
        with self._db.write(f"order intent {cid}", epoch) as tx:
            created = tx.run(
                "INSERT INTO order_intents (client_order_id, sleeve, symbol, side, qty, "
                "order_type, limit_price, stop_price, venue, bar_ts_ns, ts_decided_ns, epoch, "
                "state, filled_qty, avg_fill_price, ts_updated_ns, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id",
                row,
            )
            if created:
                _log_event(tx, cid, None, OrderState.NEW, epoch, decided, "decided")
            return Intent.from_row(_intent_row(tx, cid))

    def transition(
        self,
        client_order_id: str,
        to_state: str,
        *,
        epoch: int | None,
        expected_state: str | None = None,
        ts_ns: int | None = None,
        reason: str | None = None,
        broker_order_id: str | None = None,
        broker_status: str | None = None,
        raw: Mapping[str, Any] | None = None,
        during_halt: bool = False,
    ) -> Intent:
        """Move an intent to ``to_state`` if the state machine allows it; return the new row.

        The UPDATE compares and sets on the current state, inside a fenced transaction: of two
        writers moving NEW -> SUBMITTING only one succeeds (the other gets
        :class:`~live.store.errors.IllegalTransitionError` and must not call the broker).
        ``expected_state`` additionally requires the order to be in that state. Broker facts
        (``broker_order_id``, ``broker_status``, the ``raw`` answer) are kept in ``orders``.

        Moving to SUBMITTING while a HALT is active is refused in the same transaction, so
        ``live halt`` stops orders at once even if the runner has not looked yet; pass
        ``during_halt=True`` only for orders the halt itself calls for (``--flatten``).

        Raises
        ------
        IllegalTransitionError
            On a move :data:`~live.store.records.TRANSITIONS` does not allow (including to the
            same state) or when the state is not ``expected_state``; nothing changes.
        HaltedError
            On a move to SUBMITTING while halted (without ``during_halt``).
        UnknownOrderError
            When no intent has this id.
        StaleEpochError
            When ``epoch`` is below the fence.
        """
        to = _state("to_state", to_state)
        expected = None if expected_state is None else _state("expected_state", expected_state)
        epoch = checks.epoch_of(epoch)
        now = time.time_ns() if ts_ns is None else checks.integer("ts_ns", ts_ns)
        raw_text = checks.dumps("raw", raw)
        with self._db.write(f"order {client_order_id} -> {to}", epoch) as tx:
            intent = _intent_row(tx, client_order_id, lock=self._db.for_update)
            current = intent["state"]
            if expected is not None and current != expected:
                why = f"expected {expected}: another writer moved it first"
                raise IllegalTransitionError(client_order_id, current, to, why)
            if not is_legal(current, to):
                allowed = sorted(TRANSITIONS[OrderState(current)]) or "none, it is final"
                raise IllegalTransitionError(client_order_id, current, to, f"allowed: {allowed}")
            if to == OrderState.SUBMITTING and not during_halt:
                halt = tx.one("SELECT reason, created_by FROM halts WHERE ts_cleared_ns IS NULL")
                if halt is not None:
                    raise HaltedError(
                        f"order {client_order_id} not sent: HALT by {halt['created_by']} "
                        f"({halt['reason']}); a person must run `live resume`"
                    )
            changed = tx.run(
                "UPDATE order_intents SET state = ?, ts_updated_ns = ? "
                "WHERE client_order_id = ? AND state = ?",
                (to.value, now, client_order_id, current),
            )
            if changed != 1:
                raise IllegalTransitionError(client_order_id, current, to, "changed concurrently")
            _log_event(tx, client_order_id, current, to, epoch, now, reason)
            if broker_order_id is not None or broker_status is not None or raw_text is not None:
                tx.run(
                    "INSERT INTO orders (client_order_id, venue, broker_order_id, broker_status, "
                    "ts_updated_ns, raw) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (client_order_id) "
                    "DO UPDATE SET broker_order_id = COALESCE(excluded.broker_order_id, "
                    "orders.broker_order_id), broker_status = COALESCE(excluded.broker_status, "
                    "orders.broker_status), raw = COALESCE(excluded.raw, orders.raw), "
                    "ts_updated_ns = excluded.ts_updated_ns",
                    (
                        client_order_id,
                        intent["venue"],
                        broker_order_id,
                        broker_status,
                        now,
                        raw_text,
                    ),
                )
            return Intent.from_row(_intent_row(tx, client_order_id))

    def latest_intent_bar(self) -> int | None:
        """The bar time of the newest decision with an intent (None: no intents yet)."""
        with self._db.read("read latest intent") as tx:
            row = tx.one("SELECT MAX(bar_ts_ns) AS ts FROM order_intents")
        return None if row is None or row["ts"] is None else int(row["ts"])

    def intent(self, client_order_id: str) -> Intent | None:
        """Return the intent with this id, or None."""
        with self._db.read("read intent") as tx:
            row = tx.one(
                "SELECT * FROM order_intents WHERE client_order_id = ?", (client_order_id,)
            )
        return None if row is None else Intent.from_row(row)

    def intents(self, *, sleeve: str | None = None, open_only: bool = False) -> list[Intent]:
        """Return intents by decision time; ``open_only``: those not FILLED, CANCELLED or
        REJECTED (what reconciliation must look up at the broker)."""
        sql, params = "SELECT * FROM order_intents WHERE 1 = 1", []
        if sleeve is not None:
            sql, params = sql + " AND sleeve = ?", [*params, sleeve]
        if open_only:
            sql += f" AND state IN ({', '.join('?' * len(_OPEN_STATES))})"
            params += _OPEN_STATES
        with self._db.read("read intents") as tx:
            rows = tx.all(sql + " ORDER BY ts_decided_ns, client_order_id", params)
        return [Intent.from_row(r) for r in rows]

    def order(self, client_order_id: str) -> BrokerOrder | None:
        """Return what the broker last said about this intent's order, or None."""
        with self._db.read("read order") as tx:
            row = tx.one("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return None if row is None else BrokerOrder.from_row(row)

    def order_events(self, client_order_id: str | None = None) -> list[OrderEvent]:
        """Return state changes in commit order (of one intent, or all)."""
        sql, params = "SELECT * FROM order_events", ()
        if client_order_id is not None:
            sql, params = sql + " WHERE client_order_id = ?", (client_order_id,)
        with self._db.read("read order events") as tx:
            return [OrderEvent.from_row(r) for r in tx.all(sql + " ORDER BY seq", params)]

    # ------------------------------------------------------------------ fills
    def record_fill(
        self,
        *,
        venue: str,
        fill_id: str,
        client_order_id: str,
        qty: float,
        price: float,
        ts_fill_ns: int,
        epoch: int | None,
        fee: float = 0.0,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record one execution; return False if (venue, fill_id) was already recorded.

        In the same transaction the intent's ``filled_qty`` and ``avg_fill_price`` are
        recomputed from all its fills (so fills may arrive in any order), and its state moves
        to PARTIALLY_FILLED or FILLED when that is a legal move (a late fill of a CANCELLED
        order is recorded and counted, the state stays). A duplicate is ignored even if its
        content differs: the first report of a fill id wins.
        """
        epoch, now = checks.epoch_of(epoch), time.time_ns()
        values = (
            checks.text("venue", venue), checks.text("fill_id", fill_id), client_order_id,
            checks.finite("qty", qty, positive=True), checks.finite("price", price, positive=True),
            checks.finite("fee", fee), checks.integer("ts_fill_ns", ts_fill_ns), epoch, now,
            checks.dumps("details", details),
        )  # fmt: skip
        with self._db.write(f"fill {venue}/{fill_id}", epoch) as tx:
            intent = _intent_row(tx, client_order_id, lock=self._db.for_update)
            if not tx.run(
                "INSERT INTO fills (venue, fill_id, client_order_id, qty, price, fee, ts_fill_ns, "
                "epoch, ts_recorded_ns, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (venue, fill_id) DO NOTHING RETURNING fill_id",
                values,
            ):
                return False
            total = tx.one(
                "SELECT SUM(qty) AS qty, SUM(qty * price) AS notional FROM fills "
                "WHERE client_order_id = ?",
                (client_order_id,),
            )
            filled = float(total["qty"])
            state = intent["state"]
            done = filled >= intent["qty"] * (1.0 - _FILLED_TOLERANCE)
            target = OrderState.FILLED if done else OrderState.PARTIALLY_FILLED
            new_state = target.value if state != target and is_legal(state, target) else state
            tx.run(
                "UPDATE order_intents SET filled_qty = ?, avg_fill_price = ?, state = ?, "
                "ts_updated_ns = ? WHERE client_order_id = ? AND state = ?",
                (filled, total["notional"] / filled, new_state, now, client_order_id, state),
            )
            if new_state != state:
                _log_event(tx, client_order_id, state, new_state, epoch, now, f"fill {fill_id}")
            return True

    def fills(self, client_order_id: str | None = None) -> list[Fill]:
        """Return fills by fill time (of one intent, or all)."""
        sql, params = "SELECT * FROM fills", ()
        if client_order_id is not None:
            sql, params = sql + " WHERE client_order_id = ?", (client_order_id,)
        with self._db.read("read fills") as tx:
            rows = tx.all(sql + " ORDER BY ts_fill_ns, venue, fill_id", params)
        return [Fill.from_row(r) for r in rows]

    # ------------------------------------------------------------------ trades, positions, equity
    def record_trade(
        self,
        *,
        trade_id: str,
        sleeve: str,
        symbol: str,
        direction: str,
        qty: float,
        entry_ts_ns: int,
        exit_ts_ns: int,
        entry_price: float,
        exit_price: float,
        pnl: float,
        epoch: int | None,
        fees: float = 0.0,
        exit_reason: str = "signal",
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record a closed trade; return False if ``trade_id`` was already recorded.

        ``trade_id`` is chosen by the runner so that recording the same close again (after a
        restart) is recognised, e.g. the client order id of the exit order.
        """
        epoch = checks.epoch_of(epoch)
        values = (
            checks.text("trade_id", trade_id), checks.text("sleeve", sleeve),
            checks.text("symbol", symbol), checks.choice("direction", direction, DIRECTIONS),
            checks.finite("qty", qty, positive=True), checks.integer("entry_ts_ns", entry_ts_ns),
            checks.integer("exit_ts_ns", exit_ts_ns),
            checks.finite("entry_price", entry_price, positive=True),
            checks.finite("exit_price", exit_price, positive=True), checks.finite("fees", fees),
            checks.finite("pnl", pnl), checks.text("exit_reason", exit_reason),
            epoch, time.time_ns(), checks.dumps("details", details),
        )  # fmt: skip
        with self._db.write(f"trade {trade_id}", epoch) as tx:
            return bool(
                tx.run(
                    "INSERT INTO trades (trade_id, sleeve, symbol, direction, qty, entry_ts_ns, "
                    "exit_ts_ns, entry_price, exit_price, fees, pnl, exit_reason, epoch, "
                    "ts_recorded_ns, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (trade_id) DO NOTHING RETURNING trade_id",
                    values,
                )
            )

    def trades(self, sleeve: str | None = None) -> list[Trade]:
        """Return closed trades by exit time (of one sleeve, or all)."""
        sql, params = "SELECT * FROM trades", ()
        if sleeve is not None:
            sql, params = sql + " WHERE sleeve = ?", (sleeve,)
        with self._db.read("read trades") as tx:
            rows = tx.all(sql + " ORDER BY exit_ts_ns, trade_id", params)
        return [Trade.from_row(r) for r in rows]

    def upsert_position(
        self,
        *,
        sleeve: str,
        symbol: str,
        qty: float,
        avg_price: float | None,
        ts_ns: int,
        epoch: int | None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Set a sleeve's signed position in a symbol as of ``ts_ns``; return whether it was
        written. An update older than the stored one is ignored (False), so a late or replayed
        writer never moves a position back in time; an equal time overwrites. ``details`` holds
        what the runner needs to resume the position (stop, trailing peak, entry time)."""
        epoch = checks.epoch_of(epoch)
        values = (
            checks.text("sleeve", sleeve), checks.text("symbol", symbol),
            checks.finite("qty", qty), checks.finite("avg_price", avg_price, optional=True),
            checks.integer("ts_ns", ts_ns), epoch, checks.dumps("details", details),
        )  # fmt: skip
        with self._db.write(f"position {sleeve}/{symbol}", epoch) as tx:
            return bool(
                tx.run(
                    "INSERT INTO positions (sleeve, symbol, qty, avg_price, ts_ns, epoch, "
                    "details) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sleeve, symbol) "
                    "DO UPDATE SET qty = excluded.qty, avg_price = excluded.avg_price, "
                    "ts_ns = excluded.ts_ns, epoch = excluded.epoch, details = excluded.details "
                    "WHERE positions.ts_ns <= excluded.ts_ns RETURNING symbol",
                    values,
                )
            )

    def positions(self, sleeve: str | None = None, *, include_flat: bool = False) -> list[Position]:
        """Return positions (of one sleeve, or all), flat ones only with ``include_flat``."""
        sql, params = "SELECT * FROM positions WHERE 1 = 1", ()
        if sleeve is not None:
            sql, params = sql + " AND sleeve = ?", (sleeve,)
        if not include_flat:
            sql += " AND qty <> 0"
        with self._db.read("read positions") as tx:
            rows = tx.all(sql + " ORDER BY sleeve, symbol", params)
        return [Position.from_row(r) for r in rows]

    def record_equity(
        self,
        *,
        ts_ns: int,
        equity: float,
        epoch: int | None,
        sleeve: str = PORTFOLIO,
        cash: float | None = None,
        realized_pnl: float | None = None,
        unrealized_pnl: float | None = None,
    ) -> None:
        """Record the equity of a sleeve (default: the portfolio, ``"*"``) at a bar; the
        same (sleeve, ts_ns) again replaces the snapshot."""
        self.record_equities(
            ts_ns=ts_ns,
            epoch=epoch,
            snapshots={sleeve: (equity, cash, realized_pnl, unrealized_pnl)},
        )

    def record_equities(
        self,
        *,
        ts_ns: int,
        epoch: int | None,
        snapshots: Mapping[str, tuple[float, float | None, float | None, float | None]],
    ) -> None:
        """Record several sleeves' equity at one bar in one transaction (one commit per
        bar instead of one per sleeve): ``{sleeve: (equity, cash, realized_pnl,
        unrealized_pnl)}``, the last three optional (None)."""
        epoch = checks.epoch_of(epoch)
        ts_ns = checks.integer("ts_ns", ts_ns)
        rows = []
        for sleeve, (equity, cash, realized, unrealized) in snapshots.items():
            rows.append((
                checks.text("sleeve", sleeve), ts_ns, checks.finite("equity", equity),
                checks.finite("cash", cash, optional=True),
                checks.finite("realized_pnl", realized, optional=True),
                checks.finite("unrealized_pnl", unrealized, optional=True), epoch,
            ))  # fmt: skip
        with self._db.write(f"equity snapshots at {ts_ns}", epoch) as tx:
            for values in rows:
                tx.run(
                    "INSERT INTO equity_snapshots (sleeve, ts_ns, equity, cash, realized_pnl, "
                    "unrealized_pnl, epoch) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(sleeve, ts_ns) DO UPDATE SET equity = excluded.equity, cash = "
                    "excluded.cash, realized_pnl = excluded.realized_pnl, unrealized_pnl = "
                    "excluded.unrealized_pnl, epoch = excluded.epoch",
                    values,
                )

    def equity_curve(self, sleeve: str = PORTFOLIO) -> list[EquitySnapshot]:
        """Return a sleeve's (default: the portfolio's) equity snapshots in time order."""
        with self._db.read("read equity") as tx:
            rows = tx.all(
                "SELECT * FROM equity_snapshots WHERE sleeve = ? ORDER BY ts_ns", (sleeve,)
            )
        return [EquitySnapshot.from_row(r) for r in rows]


def _state(name: str, value: str) -> OrderState:
    try:
        return OrderState(value)
    except ValueError:
        allowed = [s.value for s in OrderState]
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}") from None


def _intent_row(tx: Any, client_order_id: str, lock: str = "") -> dict[str, Any]:
    row = tx.one("SELECT * FROM order_intents WHERE client_order_id = ?" + lock, (client_order_id,))
    if row is None:
        raise UnknownOrderError(f"no order intent with client_order_id {client_order_id!r}")
    return row


def _log_event(
    tx: Any, cid: str, from_state: Any, to_state: Any, epoch: int, ts_ns: int, reason: Any
) -> None:
    tx.run(
        "INSERT INTO order_events (client_order_id, from_state, to_state, epoch, ts_ns, reason) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (cid, None if from_state is None else str(from_state), str(to_state), epoch, ts_ns, reason),
    )
