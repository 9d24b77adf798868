"""The metric names and label names a PromQL expression uses, so a test can hold the alert
rules and dashboards to the metrics a runner exports (a renamed metric fails there)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    ("and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan")
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Names of the series ``expr`` selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", _RANGE.sub(" ", text))
    names = set()
    for match in _WORD.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before in ".$":  # 1e3, 5m, a Grafana $variable
            continue
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation, or an operator
        names.add(match.group())
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    """For each metric selected with label matchers, the label names it is matched on."""
    out: dict[str, set[str]] = {}
    for match in _SELECTOR.finditer(_STRING.sub('""', expr)):
        if match.group(1):
            labels = set(_MATCHER.findall(match.group(2))) - {"__name__"}
            out.setdefault(match.group(1), set()).update(labels)
    return out


def grouping_labels(expr: str) -> set[str]:
    """Label names of ``by``/``on``/... clauses (the labels the expression relies on)."""
    return {
        label.strip()
        for _, labels in _GROUPING.findall(_STRING.sub('""', expr))
        for label in labels.split(",")
        if label.strip()
    }


def exported_series(families: Iterable) -> set[str]:
    """Series names a prometheus_client registry's metric families export."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
    }
    return {family.name + s for family in families for s in suffixes.get(family.type, ("",))}
