"""Leader lease for primary/standby runners: a Redis key with a token and a fencing epoch.

The leader renews the key; it stops submitting at a local deadline shorter than the lease.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from quantshift.errors import ConfigError, QuantShiftError
from quantshift.urls import mask_secrets, url_password

log = logging.getLogger(__name__)

# One script per step so that each check-and-write is atomic on the Redis server (redis-py's
# Lock uses the same token-checked GET + PEXPIRE / DEL pattern). The value stored under the lease
# key is "<epoch>:<token>", so renew and release compare both and the holder's epoch is readable.
#
# Acquire: SET NX PX with the epoch taken from the counter in the same script, so no two
# acquisitions share an epoch and the epoch is never taken without the lease. ARGV[3] is a floor
# (the highest epoch the store has seen): a Redis that lost its counter cannot go backwards.
_ACQUIRE_LUA = """
if redis.call('exists', KEYS[1]) == 1 then
    return 0
end
local epoch = redis.call('incr', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
    epoch = floor + 1
    redis.call('set', KEYS[2], epoch)
end
redis.call('set', KEYS[1], epoch .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2])
return epoch
"""
_RENEW_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class NotLeaderError(QuantShiftError):
    """This process does not hold the lease (or its local deadline has passed)."""


class LeaseUnavailableError(QuantShiftError):
    """The lease store (Redis) cannot be reached; the message never holds a password."""


@dataclass(frozen=True)
class LeaseState:
    """A term of leadership: its fencing epoch and the local deadline (``clock`` seconds)."""

    epoch: int
    valid_until_s: float


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease, without its token (for ``live status``).

    ``epoch`` and ``ttl_left_ms`` are None when nobody holds it; ``last_epoch`` is the highest
    epoch ever handed out (0 before the first acquisition).
    """

    held: bool
    epoch: int | None
    ttl_left_ms: int | None
    last_epoch: int


class Lease(Protocol):
    """What the runner uses; :class:`RedisLease` and :class:`NoLease` implement it."""

    @property
    def epoch(self) -> int | None: ...

    @property
    def state(self) -> LeaseState | None: ...

    @property
    def unreachable(self) -> str | None: ...

    def try_acquire(self, *, above_epoch: int = 0) -> LeaseState | None: ...

    def acquire(
        self,
        *,
        poll_interval_ms: int = 250,
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
        above_epoch: int = 0,
    ) -> LeaseState | None: ...

    def renew(self) -> bool: ...

    def release(self) -> None: ...

    def is_leader(self) -> bool: ...

    def assert_leader(self) -> int: ...

    def current_holder(self) -> LeaseHolder: ...

    def keep_alive(self, on_lost: Callable[[int], Any] | None = None) -> KeepAlive: ...

    def close(self) -> None: ...


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"lease {name} must be a positive integer (ms), got {value!r}")
    return value


def lease_timing(ttl_ms: int, renew_interval_ms: int, deadline_ms: int | None) -> int:
    """Check lease timings and return the deadline (ms), default ``ttl - renew_interval / 2``.

    The deadline must be longer than the renew interval (or the leader would lapse between two
    renewals) and shorter than the lease (the margin covers clock drift and the time between
    the last leadership check and a broker call).
    """
    _positive_int("ttl_ms", ttl_ms)
    _positive_int("renew_interval_ms", renew_interval_ms)
    if renew_interval_ms >= ttl_ms:
        # Checked before the default deadline is derived, which would otherwise come out
        # non-positive and be reported as the problem.
        raise ConfigError(
            "lease timings need renew_interval_ms < deadline_ms < ttl_ms: "
            f"renew_interval_ms={renew_interval_ms} is not below ttl_ms={ttl_ms}"
        )
    if deadline_ms is None:
        deadline_ms = ttl_ms - renew_interval_ms // 2
    _positive_int("deadline_ms", deadline_ms)
    if not renew_interval_ms < deadline_ms < ttl_ms:
        raise ConfigError(
            "lease timings need renew_interval_ms < deadline_ms < ttl_ms, got "
            f"renew_interval_ms={renew_interval_ms}, deadline_ms={deadline_ms}, ttl_ms={ttl_ms}"
        )
    return deadline_ms


class KeepAlive:
    """A background thread renewing a lease; see :meth:`RedisLease.keep_alive`.

    Stops by itself when the term is lost, after calling ``on_lost(epoch)`` once.
    """

    def __init__(self, lease: RedisLease | None, on_lost: Callable[[int], Any] | None) -> None:
        self._lease = lease
        self._on_lost = on_lost
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread: threading.Thread | None = None
        if lease is not None:
            self._epoch = lease.assert_leader()
            self._thread = threading.Thread(
                target=self._run, name=f"lease-keep-alive-{lease.name}", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the renewing thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop renewing (without releasing) and wait for the thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        lease = self._lease
        assert lease is not None
        clock, interval_s = lease._clock, lease.renew_interval_ms / 1000
        next_renew_s = clock() + interval_s
        while not self._stop.is_set():
            term = lease._term
            if term is None or term.epoch != self._epoch or clock() >= term.valid_until_s:
                lease._drop_if_past_deadline()
                self.lost.set()
                if self._on_lost is not None:
                    self._on_lost(self._epoch)
                return
            # Wake at the next renew, or at the deadline if renewals keep failing.
            if self._stop.wait(max(0.0, min(next_renew_s, term.valid_until_s) - clock())):
                return
            if clock() >= next_renew_s:
                started_s = clock()
                ok = lease.renew()
                # After a failed renew, retry sooner: a blip should not cost the term.
                next_renew_s = started_s + (interval_s if ok else interval_s / 4)


@dataclass(frozen=True)
class _Term:
    value: str  # "<epoch>:<token>", the secret that renew and release compare
    state: LeaseState

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def valid_until_s(self) -> float:
        return self.state.valid_until_s


class RedisLease:
    """A leader lease held in Redis, with a strictly increasing fencing epoch per acquisition.

    Parameters
    ----------
    url : str
        Redis URL (``redis://[:password@]host:port/db``); the password never appears in repr,
        logs or errors.
    name : str
        The lease's name; runners that share a name compete for one leadership.
    prefix : str
        Key prefix: the keys are ``<prefix>:<name>:lease`` and ``<prefix>:<name>:epoch``.
    ttl_ms : int
        Lease time-to-live in Redis, set on acquire and on every renew.
    renew_interval_ms : int
        How often :meth:`keep_alive` renews.
    deadline_ms : int, optional
        The local deadline, counted from the moment the acquire/renew request was *sent*;
        default ``ttl_ms - renew_interval_ms / 2``. Must lie between the interval and the ttl.
    clock : callable
        Monotonic clock in seconds.

    Notes
    -----
    Clock assumption: Redis starts the ttl when it runs the command, which is after this process
    sent it, so the lease outlives ``t_sent + ttl_ms`` on Redis's clock. The holder counts its
    deadline from ``t_sent`` on a monotonic clock, so as long as the two clocks' rates differ by
    less than ``1 - deadline_ms / ttl_ms`` (about 17 % with the defaults; real drift is parts per
    million) the local deadline passes before Redis lets a standby in. Wall-clock jumps on the
    Redis host break this (Redis expires keys by wall time). The remaining margin covers the
    time between :meth:`assert_leader` and the broker call; the store's epoch fence catches
    whatever slips through, so every write must carry :meth:`assert_leader`'s epoch.

    The epoch counter key has no ttl and must survive Redis restarts (persistence on); pass the
    highest epoch the store has seen as ``above_epoch`` so that a lost counter cannot reissue
    an old epoch.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        prefix: str = "quantshift",
        ttl_ms: int = 3000,
        renew_interval_ms: int = 1000,
        deadline_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(name, str) or not name or not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"lease name and prefix must be non-empty, got {name!r}, {prefix!r}")
        self.deadline_ms = lease_timing(ttl_ms, renew_interval_ms, deadline_ms)
        self.name, self.prefix = name, prefix
        self.ttl_ms, self.renew_interval_ms = ttl_ms, renew_interval_ms
        self.url_redacted = mask_secrets(url)
        self._password = url_password(url)
        self._clock = clock
        self._lease_key = f"{prefix}:{name}:lease"
        self._epoch_key = f"{prefix}:{name}:epoch"
        # Short timeouts and no retries: a call lasts at most a connect and a reply timeout, half
        # the lease, so a hung Redis cannot stall the renewing thread for long. is_leader()
        # reads the clock, not the connection, so it turns False at the deadline regardless.
        timeout_s = ttl_ms / 4000
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(
                f"lease {name}: bad Redis URL {self.url_redacted}: {self._scrub(exc)}"
            ) from None
        self._acquire_script = self._redis.register_script(_ACQUIRE_LUA)
        self._renew_script = self._redis.register_script(_RENEW_LUA)
        self._release_script = self._redis.register_script(_RELEASE_LUA)
        self._mutex = threading.RLock()
        self._term: _Term | None = None
        self._epoch: int | None = None
        self._keep_alive: KeepAlive | None = None
        self._unreachable: str | None = None

    def __repr__(self) -> str:
        return (
            f"RedisLease(url={self.url_redacted!r}, name={self.name!r}, epoch={self._epoch}, "
            f"leader={self.is_leader()})"
        )

    def __enter__(self) -> RedisLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def epoch(self) -> int | None:
        """The epoch of this process's latest acquisition (kept after a loss), or None."""
        return self._epoch

    @property
    def state(self) -> LeaseState | None:
        """The current term (its deadline may have passed: use :meth:`is_leader`), or None."""
        term = self._term
        return None if term is None else term.state

    @property
    def unreachable(self) -> str | None:
        """Why the last acquisition could not reach Redis (password-free), or None if it did
        (held by another or won): a standby backs off on it."""
        return self._unreachable

    def _scrub(self, exc: BaseException) -> str:
        return mask_secrets(f"{type(exc).__name__}: {exc}", self._password)

    def try_acquire(self, *, above_epoch: int = 0) -> LeaseState | None:
        """Take the lease if nobody holds it; return the new term, or None.

        Holding it already, renew instead and return the current term (None if that fails).
        A Redis error counts as not acquired (never raised; :attr:`unreachable` says why, the
        caller decides how loudly and how soon to try again). The new epoch is greater than
        every earlier one and than ``above_epoch``.
        """
        with self._mutex:
            if self._term is not None:
                return self._term.state if self.renew() else None
            token = secrets.token_hex(16)
            sent_s = self._clock()
            try:
                epoch = int(
                    self._acquire_script(
                        keys=[self._lease_key, self._epoch_key],
                        args=[token, self.ttl_ms, int(above_epoch)],
                    )
                )
            except redis.RedisError as exc:
                self._unreachable = f"Redis at {self.url_redacted}: {self._scrub(exc)}"
                log.debug("lease %s: acquire failed: %s", self.name, self._unreachable)
                return None
            self._unreachable = None
            if epoch == 0:
                return None
            state = LeaseState(epoch=epoch, valid_until_s=sent_s + self.deadline_ms / 1000)
            self._term = _Term(value=f"{epoch}:{token}", state=state)
            self._epoch = epoch
            log.info("lease %s: acquired epoch %d", self.name, epoch)
            return state

    def acquire(
        self,
        *,
        poll_interval_ms: int = 250,
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
        above_epoch: int = 0,
    ) -> LeaseState | None:
        """Poll :meth:`try_acquire` every ``poll_interval_ms`` (the standby's wait).

        Return the term, or None when ``timeout_s`` passes or ``stop`` is set first.
        """
        _positive_int("poll_interval_ms", poll_interval_ms)
        stop = stop if stop is not None else threading.Event()
        give_up_s = math.inf if timeout_s is None else self._clock() + timeout_s
        while True:
            state = self.try_acquire(above_epoch=above_epoch)
            if state is not None:
                return state
            wait_s = min(poll_interval_ms / 1000, give_up_s - self._clock())
            if wait_s <= 0 or stop.wait(wait_s):
                return None

    def renew(self) -> bool:
        """Extend the lease if it is still ours; return whether it was extended.

        False after a Redis error (the term lives on until its deadline, and a later renew may
        still succeed), and False for good once the deadline has passed or another holder has
        the key (the term is dropped; acquire again for a new epoch). Never raises.
        """
        with self._mutex:
            term = self._term
            if term is None:
                return False
            sent_s = self._clock()
            if sent_s >= term.valid_until_s:
                self._drop_if_past_deadline()
                return False
            try:
                extended = self._renew_script(
                    keys=[self._lease_key], args=[term.value, self.ttl_ms]
                )
            except redis.RedisError as exc:
                left_ms = (term.valid_until_s - self._clock()) * 1000
                log.warning(
                    "lease %s: renew of epoch %d failed (%s); leader for %.0f ms more at most",
                    self.name,
                    term.epoch,
                    self._scrub(exc),
                    max(0.0, left_ms),
                )
                return False
            if not extended:
                log.warning("lease %s: epoch %d lost, key gone or taken", self.name, term.epoch)
                self._term = None
                return False
            state = LeaseState(epoch=term.epoch, valid_until_s=sent_s + self.deadline_ms / 1000)
            self._term = _Term(value=term.value, state=state)
            return True

    def _drop_if_past_deadline(self) -> None:
        """End a term whose deadline passed; free the key at once if it is still ours."""
        with self._mutex:
            term = self._term
            if term is None or self._clock() < term.valid_until_s:
                return
            self._term = None
            log.warning("lease %s: epoch %d lost, deadline passed", self.name, term.epoch)
            self._release_value(term.value)

    def _release_value(self, value: str) -> None:
        try:
            self._release_script(keys=[self._lease_key], args=[value])
        except redis.RedisError as exc:
            log.warning("lease %s: release failed: %s", self.name, self._scrub(exc))

    def release(self) -> None:
        """Stop keeping the lease alive and delete the key if it is still ours."""
        keep_alive = self._keep_alive
        if keep_alive is not None:
            keep_alive.stop()
        with self._mutex:
            term, self._term = self._term, None
            if term is not None:
                self._release_value(term.value)
                log.info("lease %s: released epoch %d", self.name, term.epoch)

    def close(self) -> None:
        """Release the lease and close the Redis connections."""
        self.release()
        self._redis.close()

    def is_leader(self) -> bool:
        """Whether this process holds the lease and its local deadline has not passed."""
        term = self._term
        return term is not None and self._clock() < term.valid_until_s

    def assert_leader(self) -> int:
        """Return the current epoch (to stamp on writes); raise :class:`NotLeaderError` if none."""
        term = self._term
        if term is None or self._clock() >= term.valid_until_s:
            raise NotLeaderError(f"lease {self.name}: this runner is not the leader")
        return term.epoch

    def current_holder(self) -> LeaseHolder:
        """Read who holds the lease (token-free); raise :class:`LeaseUnavailableError`."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                value, ttl_ms, last = (
                    pipe.get(self._lease_key).pttl(self._lease_key).get(self._epoch_key).execute()
                )
        except redis.RedisError as exc:
            raise LeaseUnavailableError(
                f"lease {self.name}: Redis at {self.url_redacted} unreachable: {self._scrub(exc)}"
            ) from None
        last_epoch = int(last) if last is not None else 0
        if value is None:
            return LeaseHolder(held=False, epoch=None, ttl_left_ms=None, last_epoch=last_epoch)
        epoch = int(value.split(":", 1)[0])
        return LeaseHolder(held=True, epoch=epoch, ttl_left_ms=int(ttl_ms), last_epoch=last_epoch)

    def keep_alive(self, on_lost: Callable[[int], Any] | None = None) -> KeepAlive:
        """Renew in a background thread every ``renew_interval_ms`` while the term lasts.

        When the term ends (deadline passed without a renew, or the key taken) the thread calls
        ``on_lost(epoch)`` once and stops; :meth:`is_leader` is already False by then. The
        callback runs in that thread and may be late by a Redis call in flight (``ttl_ms / 2``),
        so check :meth:`assert_leader` before each submit rather than relying on it.
        Raise :class:`NotLeaderError` when not leader.
        """
        if self._keep_alive is not None:
            self._keep_alive.stop()
        self._keep_alive = KeepAlive(self, on_lost)
        return self._keep_alive


class NoLease:
    """The lease of a single host: always leader, epoch 0, no service.

    The single-runner lock on the store keeps a second runner out; this only keeps one code
    path in the runner.
    """

    name = "single-host"
    _STATE = LeaseState(epoch=0, valid_until_s=math.inf)

    def __repr__(self) -> str:
        return "NoLease()"

    @property
    def epoch(self) -> int:
        """Always 0."""
        return 0

    @property
    def state(self) -> LeaseState:
        """The permanent term (epoch 0, no deadline)."""
        return self._STATE

    @property
    def unreachable(self) -> None:
        """Always None: there is no service to reach."""
        return None

    def try_acquire(self, *, above_epoch: int = 0) -> LeaseState:
        """Return the permanent term (epoch 0)."""
        return self._STATE

    def acquire(self, **_: Any) -> LeaseState:
        """Return the permanent term (epoch 0)."""
        return self._STATE

    def renew(self) -> bool:
        """Always True."""
        return True

    def release(self) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to close."""

    def is_leader(self) -> bool:
        """Always True."""
        return True

    def assert_leader(self) -> int:
        """Return epoch 0."""
        return 0

    def current_holder(self) -> LeaseHolder:
        """This host, epoch 0, no expiry."""
        return LeaseHolder(held=True, epoch=0, ttl_left_ms=None, last_epoch=0)

    def keep_alive(self, on_lost: Callable[[int], Any] | None = None) -> KeepAlive:
        """Return a handle with no thread (nothing to renew)."""
        return KeepAlive(None, on_lost)


def open_lease(redis_url: str | None, name: str, **options: Any) -> RedisLease | NoLease:
    """Return a :class:`RedisLease` (``options`` as its keywords), or :class:`NoLease` without
    a URL; no network call yet."""
    return NoLease() if redis_url is None else RedisLease(redis_url, name, **options)
