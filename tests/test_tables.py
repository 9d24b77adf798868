"""The one config-table reader: typed values, unknown keys refused, errors that say where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from quantshift.errors import ConfigError
from quantshift.tables import Table, read_toml


@dataclass(frozen=True, kw_only=True)
class Window:
    name: str
    bars: int = 10
    scale: float = 1.0
    enabled: bool = True
    side: Literal["long", "short"] = "long"
    cap: float | None = None

    def __post_init__(self) -> None:
        if self.bars > 100:
            raise ConfigError(f"bars={self.bars} must be at most 100")


def test_unknown_keys_name_the_file_the_table_and_what_is_allowed():
    top = Table({"window": {"nme": "x"}, "extra": {}}, "study.toml")
    with pytest.raises(ConfigError, match=r"^study.toml: extra: unknown section; allowed: window$"):
        top.refuse_unknown({"window"})
    with pytest.raises(
        ConfigError, match=r"^study.toml: \[window\] nme: unknown key; allowed: bars, cap, enabled"
    ):
        top.table("window").build(Window)


def test_nested_tables_and_lists_of_tables_carry_their_place():
    top = Table({"a": {"b": {"k": 1}}, "rows": [{"k": 1}, {"k": "x"}], "flat": 3}, "f.toml")
    assert top.table("a").table("b").name == "a.b"
    with pytest.raises(ConfigError, match=r"f.toml: \[rows\[1\]\] k: must be an integer >= 0"):
        [row.integer("k", None, minimum=0) for row in top.tables("rows")]
    with pytest.raises(ConfigError, match=r"f.toml: \[flat\] must be a table"):
        top.table("flat")
    with pytest.raises(ConfigError, match=r"f.toml: missing section \[gone\]"):
        top.table("gone", required=True)
    with pytest.raises(ConfigError, match=r"f.toml: rows: must be a non-empty list of tables"):
        Table({"rows": []}, "f.toml").tables("rows")
    assert top.table("gone").raw == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, r"\[w\] name: is required"),
        ({"name": 3}, r"\[w\] name: must be a string, got 3"),
        ({"name": "x", "bars": 2.5}, r"\[w\] bars: must be an integer, got 2.5"),
        ({"name": "x", "bars": True}, r"\[w\] bars: must be an integer, got True"),
        ({"name": "x", "scale": "big"}, r"\[w\] scale: must be a number, got 'big'"),
        ({"name": "x", "enabled": 1}, r"\[w\] enabled: must be true or false, got 1"),
        ({"name": "x", "side": "up"}, r"\[w\] side: must be one of long, short, got 'up'"),
        ({"name": "x", "cap": "no"}, r"\[w\] cap: must be a number, got 'no'"),
        ({"name": "x", "bars": 500}, r"^s.toml: \[w\] bars=500 must be at most 100$"),
    ],
)
def test_build_checks_types_from_the_annotations_and_places_the_class_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        Table(raw, "s.toml", "w").build(Window)


def test_build_accepts_what_the_annotations_allow():
    window = Table({"name": "x", "scale": 2, "cap": None}, "s.toml", "w").build(Window, bars=5)
    assert window == Window(name="x", bars=5, scale=2, cap=None)


def test_getters_return_defaults_and_refuse_wrong_values():
    table = Table({"n": 1.5, "s": " ", "c": "b"}, "s.toml", "t")
    assert table.number("n", 0.0) == 1.5 and table.number("m", 2) == 2.0
    assert table.boolean("flag", True) is True and table.string("none") is None
    assert table.choice("c", ("a", "b"), "a") == "b"
    with pytest.raises(ConfigError, match=r"\[t\] s: must be a non-empty string"):
        table.string("s")
    with pytest.raises(ConfigError, match=r"\[t\] n: must be one of 1, 2, got 1.5"):
        table.choice("n", (1, 2), 1)
    with pytest.raises(ConfigError, match=r"\[t\] n: must be a number"):
        Table({"n": float("nan")}, "s.toml", "t").number("n", 0.0)
    assert table.without("n", "s").raw == {"c": "b"}


def test_read_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.toml: study file not found"):
        read_toml(tmp_path / "missing.toml", "study file")
    bad = tmp_path / "bad.toml"
    bad.write_text("[a\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        read_toml(bad, "study file")
    good = tmp_path / "good.toml"
    good.write_text("# note\n[a]\nk = 1\n")
    top, text = read_toml(good, "study file")
    assert top.table("a").integer("k", None, minimum=0) == 1 and text.startswith("# note")
    assert top.source == str(good)
