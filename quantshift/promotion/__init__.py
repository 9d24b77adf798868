"""Promotion: the record format, the gate, and how the promotion script reaches a live store.

Research writes records, live adopts them; both import only this package from each other's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from quantshift.errors import ConfigError
from quantshift.promotion.gate import (
    GateConfig,
    LiveGate,
    PaperEvidence,
    PaperGate,
    PaperStretch,
    ResearchEvidence,
    evaluate_live_gate,
    evaluate_paper_gate,
    load_gate_config,
    paper_evidence,
)
from quantshift.promotion.record import (
    FORMAT_VERSION,
    STAGES,
    GateCheck,
    GateResult,
    PromotionRecord,
    fingerprint_mismatch,
)

STORE_ENTRY_POINTS = "quantshift.promotion_stores"


@dataclass(frozen=True, kw_only=True)
class StoredPromotion:
    """A record as a store keeps it: its row id, whether it is the active one, who wrote it."""

    promotion_id: int
    active: bool
    created_by: str
    ts_created_ns: int
    record: PromotionRecord


class PromotionStore(Protocol):
    """Where runners read promotion records (the live store); see ``live.store.promotions``."""

    def add(self, record: PromotionRecord, *, by: str, reason: str) -> StoredPromotion: ...
    def active(self, name: str, stage: str) -> StoredPromotion | None: ...
    def history(self, name: str | None = None) -> list[StoredPromotion]: ...
    def get(self, promotion_id: int) -> StoredPromotion: ...
    def activate(self, promotion_id: int, *, by: str, reason: str) -> StoredPromotion: ...
    def events(self, promotion_id: int | None = None) -> list[dict[str, Any]]: ...
    def paper_evidence(self, promotion_id: int) -> PaperEvidence: ...
    def close(self) -> None: ...


def open_promotion_store(url: str) -> PromotionStore:
    """Open the store at ``url`` through the package registered under the
    ``quantshift.promotion_stores`` entry point group (the live package registers its store)."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=STORE_ENTRY_POINTS))
    if not found:
        raise ConfigError(
            "no promotion store is installed (entry point group quantshift.promotion_stores); "
            "install QuantShift with its live package"
        )
    return found[0].load()(url)


__all__ = [
    "FORMAT_VERSION",
    "STAGES",
    "GateCheck",
    "GateConfig",
    "GateResult",
    "LiveGate",
    "PaperEvidence",
    "PaperGate",
    "PaperStretch",
    "PromotionRecord",
    "PromotionStore",
    "ResearchEvidence",
    "StoredPromotion",
    "evaluate_live_gate",
    "evaluate_paper_gate",
    "fingerprint_mismatch",
    "load_gate_config",
    "open_promotion_store",
    "paper_evidence",
]
