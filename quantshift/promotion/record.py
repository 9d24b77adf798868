"""The promotion record: which parameters trade, at which stage, on what evidence, pinned to code.

Shared by research (which writes it) and live (which adopts it); versioned and validated on load.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from quantshift.errors import ConfigError
from quantshift.formatting import number
from quantshift.urls import mask_secrets

FORMAT_VERSION = 1
STAGES = ("paper", "live")
CODE_KEYS = ("version", "strategy_hash", "git_commit", "git_dirty")
STUDY_TERMS = (
    "direction",
    "sizing",
    "size",
    "risk_per_trade",
    "size_at",
    "fees_bps",
    "slippage_bps",
    "use_stops",
)
"""Backtest settings (SimConfig fields) a sleeve trading a record shares with its study when
it trades on the study's terms: how it sizes, when (at the fill or at the decision), and pays."""
_TERMS_BEFORE_RECORDED = {"size_at": "fill"}  # studies sized at the fill before size_at existed


@dataclass(frozen=True, kw_only=True)
class GateCheck:
    """One gate check: ``value`` compared with ``threshold`` by ``op`` (``>=``, ``>``, ``<=``,
    ``<``, ``==``); ``passed`` False when the value is missing (None/NaN) as well. A check the
    gate config waived passes and says so in ``note``."""

    name: str
    value: float | bool | None
    op: str
    threshold: float | bool
    passed: bool
    note: str = ""

    def line(self) -> str:
        """``FAIL deflated Sharpe ratio 0.937 (needs >= 0.95; over 300 trials)``: what was
        measured and what the gate needs, never a comparison that reads as a false statement."""
        mark = ("WAIVED" if self.note.startswith("WAIVED") else "PASS") if self.passed else "FAIL"
        value = "missing" if self.value is None else number(self.value)
        op = "" if self.op == "==" else f"{self.op} "
        needs = "; ".join(filter(None, (f"needs {op}{number(self.threshold)}", self.note)))
        return f"{mark} {self.name} {value} ({needs})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "threshold": self.threshold,
            "passed": self.passed,
            "note": self.note,
        }


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """Every check of one gate (``stage``), whether all passed, and whether it was forced."""

    stage: str
    checks: tuple[GateCheck, ...]
    forced: bool = False

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def lines(self) -> list[str]:
        head = f"gate to {self.stage}: " + ("PASSED" if self.passed else "FAILED")
        if self.forced and not self.passed:
            head += " -- FORCED through by a person"
        return [head, *("  " + c.line() for c in self.checks)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "passed": self.passed,
            "forced": self.forced,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "gate") -> GateResult:
        _require(data, ("stage", "passed", "forced", "checks"), where)
        checks = tuple(
            GateCheck(**{k: c.get(k, "") if k == "note" else c[k] for k in _CHECK_KEYS})
            for c in _list(data["checks"], f"{where}.checks")
        )
        result = cls(stage=data["stage"], checks=checks, forced=bool(data["forced"]))
        if result.passed != bool(data["passed"]):
            raise ConfigError(f"{where}: 'passed' disagrees with its checks")
        return result


_CHECK_KEYS = ("name", "value", "op", "threshold", "passed", "note")
_ADDED_FIELDS = ("causality", "overlay", "preregistration", "registry", "lockbox")
"""Fields added after format version 1 was first written: left out of the hash when empty."""


@dataclass(frozen=True, kw_only=True)
class PromotionRecord:
    """A parameter set promoted to ``stage``, with the evidence and the code it is pinned to.

    ``name`` is what a live sleeve refers to (``promotion = "<name>"``); ``record_id`` is a
    content hash, so the same record has the same id everywhere.
    """

    name: str
    stage: str
    strategy: str
    params: Mapping[str, float]
    symbols: tuple[str, ...]
    allocation: float
    code: Mapping[str, Any]
    data: Mapping[str, Any]
    in_sample: Mapping[str, float]
    out_of_sample: Mapping[str, float]
    statistics: Mapping[str, float]
    monte_carlo: Mapping[str, float]
    gates: tuple[GateResult, ...]
    mlflow_run_id: str
    created_by: str
    created_at: str
    paper_record: Mapping[str, Any] = field(default_factory=dict)
    parent_record_id: str | None = None
    research_settings: Mapping[str, Any] = field(default_factory=dict)
    """The backtest settings of the study (sizing, costs, direction): a live sleeve that sizes
    or pays differently trades the parameters on other terms than the evidence."""
    causality: Mapping[str, Any] = field(default_factory=dict)
    """The strategy's causality verdict on the study's data
    (``quantshift.strategies.causality.CausalityVerdict.to_dict``)."""
    overlay: Mapping[str, Any] = field(default_factory=dict)
    """What the study's regime and sentiment overlay used (see :func:`check_overlay_pin`):
    ``regime_model`` (registered ``name``, pinned ``version``, ``tracking_uri``) and
    ``sentiment`` (``scorer``, ``ttl_s``, ``lookback``, ``min_score``, ``size_scaling``)."""
    preregistration: Mapping[str, Any] = field(default_factory=dict)
    """The study's registered spec: ``spec_hash``, ``lineage``, ``data`` (the registry's data
    key), its ``chain`` of parents up to the root, and which space the walk-forward searched."""
    registry: Mapping[str, Any] = field(default_factory=dict)
    """The trial registry's counts for the lineage on the study's data when promoted:
    ``trials`` (cumulative), ``n_effective``, ``studies``, ``specs``, ``sources``."""
    lockbox: Mapping[str, Any] = field(default_factory=dict)
    """The lockbox look ``promote`` took: window, bars, Sharpe, return, drawdown, and how many
    looks (and distinct choices) that lockbox has had."""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        where = f"promotion record {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("promotion record: name must be a non-empty string")
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(
                f"{where}: format_version {self.format_version!r} is not supported "
                f"(this code reads version {FORMAT_VERSION})"
            )
        if self.stage not in STAGES:
            raise ConfigError(f"{where}: stage must be one of {STAGES}, got {self.stage!r}")
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ConfigError(f"{where}: strategy must be a non-empty string")
        if not isinstance(self.params, Mapping) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in self.params.values()
        ):
            raise ConfigError(f"{where}: params must map names to finite numbers")
        symbols = tuple(self.symbols) if not isinstance(self.symbols, str) else ()
        if not symbols or not all(isinstance(s, str) and s for s in symbols):
            raise ConfigError(f"{where}: symbols must be a non-empty list of names")
        object.__setattr__(self, "symbols", symbols)
        allocation = self.allocation
        if isinstance(allocation, bool) or not isinstance(allocation, int | float):
            raise ConfigError(f"{where}: allocation must be a number in (0, 1]")
        if not 0.0 < allocation <= 1.0:
            raise ConfigError(f"{where}: allocation must be in (0, 1], got {allocation!r}")
        missing = [k for k in CODE_KEYS if k not in self.code]
        if missing:
            raise ConfigError(f"{where}: code fingerprint lacks {missing}")
        if not isinstance(self.mlflow_run_id, str) or not self.mlflow_run_id:
            raise ConfigError(f"{where}: mlflow_run_id must be a non-empty string")
        if not self.gates or any(not isinstance(g, GateResult) for g in self.gates):
            raise ConfigError(f"{where}: gates must list at least one gate result")
        if self.gates[-1].stage != self.stage:
            raise ConfigError(f"{where}: the last gate is to {self.gates[-1].stage!r}")
        check_overlay_pin(self.overlay, where)

    @property
    def record_id(self) -> str:
        """``pr`` + 24 hex digits of a SHA-256 over the canonical JSON of the record."""
        text = json.dumps(self._body(), sort_keys=True, separators=(",", ":"), default=_plain)
        return "pr" + hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def size_at(self) -> str | None:
        """When the study fixed an entry's units: "fill" or "decision" (None: not recorded)."""
        return self.study_terms().get("size_at")

    def study_terms(self) -> dict[str, Any]:
        """Return the study's :data:`STUDY_TERMS` (empty when the record holds no settings; a
        record written before a term existed gets the value every study had then)."""
        if not self.research_settings:
            return {}
        settings = {**_TERMS_BEFORE_RECORDED, **self.research_settings}
        return {key: settings[key] for key in STUDY_TERMS if key in settings}

    def other_terms(self, settings: Mapping[str, Any]) -> list[str]:
        """Return how ``settings`` (a SimConfig's ``to_dict()``) trade otherwise than the study,
        one "key <study> in the study, <here> here" per term (empty: the same terms)."""
        return [
            f"{key} {value!r} in the study, {settings[key]!r} here"
            for key, value in self.study_terms().items()
            if key in settings and settings[key] != value
        ]

    @property
    def forced(self) -> bool:
        return any(g.forced and not g.passed for g in self.gates)

    def _body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _ADDED_FIELDS and not value:
                continue  # a record written before the field keeps its id
            if f.name == "gates":
                value = [g.to_dict() for g in value]
            elif f.name == "symbols":
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, with ``record_id`` (checked again on load)."""
        return {"record_id": self.record_id, **self._body()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=_plain)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "promotion record") -> PromotionRecord:
        """Validate and load; unknown keys, a wrong version, a missing ``record_id`` or a body
        that does not hash to it are errors: every load verifies the content."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{where}: format_version {version!r} is not supported "
                f"(this code reads version {FORMAT_VERSION})"
            )
        known = {f.name for f in fields(cls)} | {"record_id"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        _require(data, required, where)
        values = {k: v for k, v in data.items() if k != "record_id"}
        values["gates"] = tuple(
            GateResult.from_dict(g, f"{where}.gates[{i}]")
            for i, g in enumerate(_list(data["gates"], f"{where}.gates"))
        )
        values["symbols"] = tuple(_list(data["symbols"], f"{where}.symbols"))
        try:
            record = cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        stated = data.get("record_id")
        if stated is None:
            raise ConfigError(
                f"{where}: no record_id, so its content cannot be verified; the record was "
                "altered after it was written (promote it again)"
            )
        if stated != record.record_id:
            raise ConfigError(
                f"{where}: record_id {stated} does not match its content ({record.record_id}); "
                "the record was altered after it was written"
            )
        return record

    @classmethod
    def from_json(cls, text: str, where: str = "promotion record") -> PromotionRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg} at {exc.pos})") from None
        return cls.from_dict(data, where)

    def summary_lines(self) -> list[str]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        code = self.code
        commit = (code.get("git_commit") or "no git")[:12]
        return [
            f"{self.record_id}  {self.name} -> {self.stage}"
            + ("  (FORCED)" if self.forced else ""),
            f"  strategy {self.strategy}({params}) on {', '.join(self.symbols)}, "
            f"allocation {self.allocation:g}",
            f"  code {code.get('version')} @ {commit}"
            + (" (dirty)" if code.get("git_dirty") else "")
            + f", strategy hash {str(code.get('strategy_hash'))[:12]}"
            + (f" ({code['strategy_file']})" if code.get("strategy_file") else ""),
            f"  from MLflow run {self.mlflow_run_id}, by {self.created_by} at {self.created_at}",
            *self._overlay_lines(),
            *self._evidence_lines(),
        ]

    def _overlay_lines(self) -> list[str]:
        """The regime model and sentiment settings the study ran with (none: no overlay)."""
        out = []
        model = self.overlay.get("regime_model")
        if model:
            uri = model.get("tracking_uri")
            sha = model.get("model_sha256")
            out.append(
                f"  overlay: regime model {_model_pin(model)} "
                + (f"in {mask_secrets(uri)}" if uri else "(in the runner's MLflow store)")
                + (f", model file {sha[:12]}" if sha else "")
            )
        sentiment = self.overlay.get("sentiment")
        if sentiment:
            shown = ", ".join(f"{k} {_fmt(sentiment[k])}" for k in SENTIMENT_PIN_KEYS)
            out.append(f"  overlay: sentiment filter {shown}")
        return out

    def other_overlay(self, running: Mapping[str, Any]) -> list[str]:
        """Return how a runner's overlay (``running``, shaped as :attr:`overlay`: its
        ``regime_model`` name and version, its ``sentiment`` settings) differs from the study's,
        one "<what> <study> in the study, <here> here" per difference (empty: the same)."""
        out = []
        ours, theirs = self.overlay.get("regime_model"), running.get("regime_model")
        if _model_pin(ours) != _model_pin(theirs):
            out.append(
                f"regime model {_model_pin(ours) or 'none'} in the study, "
                f"{_model_pin(theirs) or 'none'} here"
            )
        ours, theirs = self.overlay.get("sentiment") or {}, running.get("sentiment") or {}
        if bool(ours) != bool(theirs):
            out.append(
                f"sentiment filter {'on' if ours else 'off'} in the study, "
                f"{'on' if theirs else 'off'} here"
            )
        elif ours:
            out += [
                f"sentiment {key} {ours.get(key)!r} in the study, {theirs.get(key)!r} here"
                for key in SENTIMENT_PIN_KEYS
                if ours.get(key) != theirs.get(key)
            ]
        return out

    def _evidence_lines(self) -> list[str]:
        """The spec, trial count and lockbox lines (records written before them have none)."""
        out = []
        pre = self.preregistration
        if pre:
            chain = list(pre.get("chain") or [pre.get("spec_hash")])
            lineage = " <- ".join(str(h) for h in chain)
            out.append(
                f"  spec {pre.get('spec_hash')} of lineage {pre.get('lineage')}"
                + (f" (parents: {lineage})" if len(chain) > 1 else " (a root spec)")
            )
        reg = self.registry
        if reg:
            out.append(
                f"  registry: {reg.get('trials')} trials of {pre.get('lineage', self.strategy)} "
                f"on this data (effective N {_fmt(reg.get('n_effective'))}) over "
                f"{reg.get('studies')} studies and {reg.get('specs')} specs"
            )
        box = self.lockbox
        if box:
            out.append(
                f"  lockbox {str(box.get('first_bar'))[:10]}..{str(box.get('last_bar'))[:10]} "
                f"({box.get('bars')} bars): Sharpe {_fmt(box.get('sharpe'))}, return "
                f"{_fmt(box.get('total_return_pct'))}%; {box.get('note', '')}"
            )
        return out


def fingerprint_mismatch(record_code: Mapping[str, Any], running: Mapping[str, Any]) -> list[str]:
    """Return how the record's code fingerprint differs from the running code's (empty: same).

    The package version and the strategy hash must be equal, and so must the hash of the core
    package's sources (engine, decision layer, strategies) when both sides have one; without it
    the git commits are compared when both sides know theirs (a runner outside a git checkout
    is then pinned by version and strategy hash alone).
    """
    out = []
    for key in ("version", "strategy_hash"):
        if record_code.get(key) != running.get(key):
            out.append(f"{key}: record {record_code.get(key)!r}, running {running.get(key)!r}")
    if record_code.get("core_hash") and running.get("core_hash"):
        if record_code["core_hash"] != running["core_hash"]:
            out.append(
                f"core_hash: record {record_code['core_hash'][:12]}, running "
                f"{running['core_hash'][:12]} (the quantshift package's code changed)"
            )
        return out
    ours, theirs = running.get("git_commit"), record_code.get("git_commit")
    if ours and theirs and ours != theirs:
        out.append(f"git_commit: record {theirs[:12]}, running {ours[:12]}")
    return out


# --------------------------------------------------------------------------- overlay pin
SENTIMENT_PIN_KEYS = ("scorer", "ttl_s", "lookback", "min_score", "size_scaling")


def check_overlay_pin(overlay: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError unless ``overlay`` pins a regime model by name and an exact version
    (never "latest") and names every sentiment setting; both parts are optional."""
    if not isinstance(overlay, Mapping):
        raise ConfigError(f"{where}: overlay must be a table")
    unknown = sorted(set(overlay) - {"regime_model", "sentiment"})
    if unknown:
        raise ConfigError(f"{where}: overlay has unknown key(s) {unknown}")
    model = overlay.get("regime_model")
    if model is not None:
        if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
            raise ConfigError(f"{where}: overlay.regime_model needs a registered model name")
        version = str(model.get("version", ""))
        if not version.isdigit():
            raise ConfigError(
                f"{where}: overlay.regime_model.version must pin a version number, got "
                f"{model.get('version')!r}"
            )
    sentiment = overlay.get("sentiment")
    if sentiment is not None:
        missing = [k for k in SENTIMENT_PIN_KEYS if not isinstance(sentiment, Mapping)
                   or k not in sentiment]  # fmt: skip
        if missing:
            raise ConfigError(f"{where}: overlay.sentiment lacks {missing}")


def _model_pin(pin: Mapping[str, Any] | None) -> str | None:
    return f"{pin['name']} version {pin['version']}" if pin else None


def _require(data: Mapping[str, Any], keys, where: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: must be a list")
    return list(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
