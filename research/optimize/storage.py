"""Where a study lives and how it is driven: Optuna storages (memory, SQLite, PostgreSQL),
creating or joining a stored study with its settings, samplers and pruners.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from pathlib import Path
from typing import Any

import optuna

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.urls import postgres_url
from research.ledger import STUDY_ATTR

SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
# Settings two processes must share to work on one study (the seed may differ: see worker_seed).
_SHARED = ("strategy param_names objectives directions sampler pruner data_fingerprint symbols "
           "search_space fixed_params config folds").split()  # fmt: skip


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler without its stop at the last grid point.

    Its ``after_trial`` calls ``Study.stop()``, which raises outside ``Study.optimize``
    (optuna issues #4121, #5141); our loop caps the budget at the grid size instead.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(name: str, seed: int, grid: dict[str, list] | None) -> optuna.samplers.BaseSampler:
    """Return the seeded sampler called ``name`` (one of SAMPLERS; ``grid`` for "grid")."""
    if name == "grid":
        return _GridSampler(grid, seed=seed)
    factory = {
        "tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
    }[name]
    return factory(seed=seed)


def make_pruner(pruner, n_folds: int) -> tuple[optuna.pruners.BasePruner, str]:
    """Return the pruner (a name from PRUNERS, None or an Optuna pruner) and its name."""
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner, type(pruner).__name__
    name = "none" if pruner is None else pruner
    if name == "median":
        return optuna.pruners.MedianPruner(), name
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(n_folds, 1)), name
    if name == "none":
        return optuna.pruners.NopPruner(), name
    raise ConfigError(f"pruner={pruner!r} is not allowed; choose one of {PRUNERS} or a pruner")


def worker_seed(seed: int, worker: str, creator: bool) -> int:
    """Return the sampler seed of ``worker``: ``seed`` for the study's creator."""
    # Workers joining a study must not replay the creator's random draws.
    return int(seed) if creator else zlib.crc32(f"{seed}:{worker}".encode())


def open_storage(storage) -> tuple[optuna.storages.BaseStorage | None, str]:
    """Return the storage object and a printable name (password masked)."""
    if storage is None:
        return None, "memory"
    import sqlalchemy

    if isinstance(storage, optuna.storages.BaseStorage):
        url = getattr(storage, "url", None)
        shown = type(storage).__name__ if url is None else sqlalchemy.engine.make_url(url)
        return storage, str(shown)  # a sqlalchemy URL prints its password masked
    url = postgres_url(str(storage), "sqlalchemy")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage {storage!r} is not a database URL") from None
    shown = parsed.render_as_string(hide_password=True)
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        # Several processes on one SQLite file wait for its lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            backend = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # Workers starting together race to create the tables; the loser retries.
            if attempt == 4:
                raise ConfigError(f"cannot open Optuna storage {shown}: {exc}") from exc
            time.sleep(0.2 * (attempt + 1))
            continue
        if parsed.drivername.startswith("sqlite"):
            # Every trial commits several times; in WAL mode with synchronous=NORMAL a commit
            # needs no fsync (a power cut may lose the last trials, never the file's integrity).
            sqlalchemy.event.listen(backend.engine, "connect", _sqlite_wal)
            backend.engine.dispose()
        return backend, shown
    raise AssertionError("unreachable")


def _sqlite_wal(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_study(backend, study_name, settings, pruner, shown) -> tuple[optuna.Study, bool]:
    """Create the study (and store its settings) or join it; return (study, created here)."""
    directions = settings["directions"]
    if backend is None:
        study = optuna.create_study(directions=directions, pruner=pruner, study_name=study_name)
        study.set_user_attr(STUDY_ATTR, settings)
        return study, True
    name = study_name or "-".join(
        (settings["strategy"], *settings["objectives"], settings["data_fingerprint"][:12])
    )
    try:
        study = optuna.create_study(
            storage=backend, study_name=name, directions=directions, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=backend, pruner=pruner)
    else:
        study.set_user_attr(STUDY_ATTR, settings)
        return study, True
    stored = wait_for_settings(study, shown)
    differ = [k for k in _SHARED if stored.get(k) != settings[k]]
    if differ:
        lines = "; ".join(
            f"{k}: study has {_short(stored.get(k))}, this run {_short(settings[k])}"
            for k in differ
        )
        raise ConfigError(f"cannot join study '{name}' in {shown}: {lines}")
    return study, False


def wait_for_settings(study: optuna.Study, shown: str, timeout_s: float = 30.0) -> dict:
    """Return the QuantShift settings stored in ``study`` (waiting for its creator's write)."""
    # The creator writes the settings just after creating the study; a joiner may be faster.
    deadline = time.monotonic() + timeout_s
    while (settings := study.user_attrs.get(STUDY_ATTR)) is None:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"study '{study.study_name}' in {shown} has no QuantShift settings; it was not "
                "created by research.optimize"
            )
        time.sleep(0.1)
    return settings


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@contextlib.contextmanager
def quiet_optuna():
    """Keep Optuna's per-study INFO lines off the console while we drive it."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def load_study(backend, study_name: str, shown: str) -> optuna.Study:
    """Return the stored study ``study_name``; raise naming the storage if it has none."""
    try:
        return optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        raise UnknownNameError(f"no study '{study_name}' in {shown}") from None
