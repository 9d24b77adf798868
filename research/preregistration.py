"""Pre-registered specs: a study declares what it will search, on which data, how it will judge
the winner, by content hash, before its first trial; an edited spec is a child of the last one.

Kept in the tracking database beside the trial registry (one table of specs, one of lockbox looks;
see ``research.lockbox``). A spec is keyed by strategy lineage and data, as the registry counts
trials, so a child's trial count is its whole lineage's on that data, its parents' included.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantshift.errors import ConfigError
from research.spec import ExperimentSpec, space_from_plain, space_to_plain

SPEC_TABLE = "quantshift_specs"
HASH_PREFIX = "sp"


def canonical_spec(spec: ExperimentSpec) -> dict[str, Any]:
    """What a study pre-registers: the search space and budget, the data window and lockbox, the
    walk-forward windows, the costs, the Monte Carlo method and the thresholds it judges by.

    The study's name, seed, storage, batch size and MLflow settings are left out: a renamed or
    reseeded study is the same registered spec (and counts against the same trials).
    """
    from quantshift.promotion import GateConfig

    search = spec.search
    return {
        "strategy": spec.strategy,
        "data": {
            "source": spec.data.source,
            "symbols": None if spec.data.symbols is None else list(spec.data.symbols),
            "start": spec.data.start,
            "end": spec.data.end,
        },
        "lockbox": {"fraction": spec.lockbox.fraction},
        "costs": spec.costs.to_dict(),
        "search": {
            "method": search.method,
            "sampler": search.sampler,
            "trials": search.trials,
            "objectives": list(search.objectives),
            "space": space_to_plain(search.space),
        },
        "walk_forward": None if spec.walk_forward is None else dict(vars(spec.walk_forward)),
        "monte_carlo": None if spec.monte_carlo is None else dict(vars(spec.monte_carlo)),
        "pbo": None if spec.pbo is None else dict(vars(spec.pbo)),
        "thresholds": {"min_trades": search.min_trades, **GateConfig().to_dict()["paper"]},
    }


def spec_hash(canonical: Mapping[str, Any]) -> str:
    """``sp`` + 20 hex digits of a SHA-256 over the canonical JSON of a spec."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return HASH_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, kw_only=True)
class RegisteredSpec:
    """One row of the spec table."""

    spec_hash: str
    lineage: str
    data_key: str
    parent_hash: str | None
    created_ns: int
    spec: Mapping[str, Any]

    def search_space(self) -> dict[str, Any]:
        """The registered search space, as ``SearchSpec.space`` holds it."""
        return space_from_plain(self.spec["search"]["space"])


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A study's spec as registered: ``chain`` runs from the spec itself to its root (the first
    spec of the lineage on this data); ``new`` is False when the same spec was registered
    before (a rerun, a renamed or reseeded study)."""

    chain: tuple[RegisteredSpec, ...]
    new: bool

    @property
    def spec(self) -> RegisteredSpec:
        return self.chain[0]

    @property
    def root(self) -> RegisteredSpec:
        return self.chain[-1]

    @property
    def narrowed(self) -> bool:
        """True when the spec searches another space than its root registered."""
        return self.spec.spec["search"]["space"] != self.root.spec["search"]["space"] or (
            self.spec.spec["search"]["method"] != self.root.spec["search"]["method"]
        )

    def headline(self) -> str:
        """One line: the spec, its lineage and parents, where the walk-forward's space is from."""
        text = f"{self.spec.spec_hash} ({self.spec.lineage})"
        if len(self.chain) > 1:
            text += " child of " + " <- ".join(s.spec_hash for s in self.chain[1:])
        return text + ("; walk-forward on the root's space" if self.narrowed else "")

    def lineage_summary(self) -> dict[str, Any]:
        """JSON-ready: the spec's hash, lineage, data key and its chain of parents."""
        return {
            "spec_hash": self.spec.spec_hash,
            "lineage": self.spec.lineage,
            "data": self.spec.data_key,
            "parent_hash": self.spec.parent_hash,
            "chain": [s.spec_hash for s in self.chain],
            "root_hash": self.root.spec_hash,
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the hashes, the lineage and where the walk-forward's space comes from."""
        return {
            **self.lineage_summary(),
            "walk_forward_space": "root" if self.narrowed else "own",
            "walk_forward_space_note": (
                f"the walk-forward searches the root spec {self.root.spec_hash}'s space, "
                f"registered before this spec narrowed or changed it"
                if self.narrowed
                else "the walk-forward searches this spec's space (as registered first)"
            ),
        }


class SpecRegistry:
    """The spec table in a SQL database (SQLite or PostgreSQL, through SQLAlchemy)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = url
        self.engine = sql_engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            SPEC_TABLE,
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("spec_hash", sa.String(40), nullable=False),
            sa.Column("lineage", sa.String(200), nullable=False),
            sa.Column("data_key", sa.String(200), nullable=False),
            sa.Column("parent_hash", sa.String(40)),
            sa.Column("created_ns", sa.BigInteger, nullable=False),
            sa.Column("spec_json", sa.Text, nullable=False),
            sa.UniqueConstraint("lineage", "data_key", "spec_hash", name="uq_quantshift_spec"),
        )
        meta.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    def register(
        self, canonical: Mapping[str, Any], *, lineage: str, data_key: str
    ) -> Registration:
        """Register ``canonical`` for (lineage, data) unless it is already there; a new spec's
        parent is the lineage's most recent spec on that data. Return it with its chain."""
        import sqlalchemy as sa

        digest = spec_hash(canonical)
        for _ in range(3):  # another process may register the same spec at the same moment
            existing = self._get(lineage, data_key, digest)
            if existing is not None:
                return Registration(chain=self.chain(existing), new=False)
            latest = self.latest(lineage, data_key)
            row = {
                "spec_hash": digest,
                "lineage": lineage,
                "data_key": data_key,
                "parent_hash": None if latest is None else latest.spec_hash,
                "created_ns": time.time_ns(),
                "spec_json": json.dumps(canonical, sort_keys=True, default=str),
            }
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert().values(**row))
            except sa.exc.IntegrityError:
                continue
            return Registration(chain=self.chain(self._get(lineage, data_key, digest)), new=True)
        raise ConfigError(f"could not register spec {digest} in {self.url}")

    def latest(self, lineage: str, data_key: str) -> RegisteredSpec | None:
        rows = self._select(lineage, data_key)
        return rows[-1] if rows else None

    def specs(self, lineage: str, data_key: str | None = None) -> list[RegisteredSpec]:
        """Every spec of a lineage (on one data key, or all), oldest first."""
        return self._select(lineage, data_key)

    def chain(self, spec: RegisteredSpec) -> tuple[RegisteredSpec, ...]:
        """``spec`` and its parents up to the root."""
        out = [spec]
        while out[-1].parent_hash is not None:
            parent = self._get(spec.lineage, spec.data_key, out[-1].parent_hash)
            if parent is None:
                raise ConfigError(
                    f"spec {out[-1].spec_hash} names parent {out[-1].parent_hash}, which is not "
                    f"in {SPEC_TABLE}; the table was edited"
                )
            out.append(parent)
        return tuple(out)

    def _get(self, lineage: str, data_key: str, digest: str) -> RegisteredSpec | None:
        t = self.table
        rows = self._rows(
            (t.c.lineage == lineage) & (t.c.data_key == data_key) & (t.c.spec_hash == digest)
        )
        return rows[0] if rows else None

    def _select(self, lineage: str, data_key: str | None) -> list[RegisteredSpec]:
        t = self.table
        where = t.c.lineage == lineage
        if data_key is not None:
            where = where & (t.c.data_key == data_key)
        return self._rows(where)

    def _rows(self, where) -> list[RegisteredSpec]:
        import sqlalchemy as sa

        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(where).order_by(t.c.id)).mappings().all()
        return [
            RegisteredSpec(
                spec_hash=r["spec_hash"],
                lineage=r["lineage"],
                data_key=r["data_key"],
                parent_hash=r["parent_hash"],
                created_ns=int(r["created_ns"]),
                spec=json.loads(r["spec_json"]),
            )
            for r in rows
        ]


def sql_engine(url: str):
    """A SQLAlchemy engine on the registry's database (``postgresql://`` through psycopg 3)."""
    import sqlalchemy as sa

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg://" + url[len(scheme) :]
    return sa.create_engine(url, future=True)


def study_keys(spec: ExperimentSpec, bars) -> tuple[str, str]:
    """The (lineage, data key) a study's trials and specs are counted under, as the trial
    registry keys them (``research.registry``)."""
    from research.registry import data_key

    return spec.get_strategy().name, data_key(bars)


def register_study(spec: ExperimentSpec, bars, url: str | None = None) -> Registration:
    """Register ``spec`` (studying ``bars``, the lockbox already cut off) before its first
    trial in the trial registry's database (default ``research.registry.registry_url()``);
    see :meth:`SpecRegistry.register`."""
    lineage, data_key = study_keys(spec, bars)
    return register_spec(canonical_spec(spec), lineage, data_key, url)


def register_spec(
    canonical: dict[str, Any], lineage: str, data_key: str, url: str | None = None
) -> Registration:
    """Register the canonical spec ``canonical`` of ``lineage`` on ``data_key`` in the trial
    registry's database (default ``research.registry.registry_url()``); see
    :meth:`SpecRegistry.register`."""
    from research.registry import registry_url

    registry = SpecRegistry(registry_url(url))
    try:
        return registry.register(canonical, lineage=lineage, data_key=data_key)
    finally:
        registry.close()
