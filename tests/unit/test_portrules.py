"""etherws.portrules: the rules as setport, [[ports]] and listport give them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import vlan
from etherws.portrules import Rules, RulesError, from_keys
from etherws.ratelimit import STORM_DEFAULT_PPS
from etherws.tables import STORM_DEFAULT, STORM_OFF


@pytest.mark.parametrize("table, rules", [
    ({}, Rules()),
    ({"vlan": 10}, Rules(vlan=10)),
    ({"trunk": "10,20-22"}, Rules(trunk=frozenset({10, 20, 21, 22}))),
    ({"trunk": [10, 20], "native": 1}, Rules(trunk=frozenset({10, 20}), native=1)),
    ({"trunk": "all"}, Rules(trunk=vlan.ALL_VIDS)),
    ({"storm": 0, "rate": 50}, Rules(storm=0, rate=50.0)),
    ({"rate": 0.5}, Rules(rate=0.5)),
    ({"rate": 0}, Rules()),
    ({"tap": "x", "mtu": 1500}, Rules()),  # other keys are not ours
])
def test_from_keys(table: dict[str, Any], rules: Rules) -> None:
    assert from_keys(table) == rules


@pytest.mark.parametrize("table, words", [
    ({"vlan": 0}, "between 1 and 4094"), ({"vlan": "10"}, "'vlan' must be an integer"),
    ({"vlan": True}, "integer"), ({"trunk": []}, "'trunk' must be"),
    ({"trunk": "x"}, "not a VLAN id"), ({"trunk": [0]}, "between"),
    ({"native": 1}, "give 'trunk' too"), ({"vlan": 10, "trunk": "20"}, "not both"),
    ({"storm": -1}, "'storm' must be"), ({"rate": -1}, "'rate' must be"),
    ({"rate": "fast"}, "Mbit/s"), ({"rate": float("inf")}, "'rate'"),
])
def test_from_keys_refuses(table: dict[str, Any], words: str) -> None:
    with pytest.raises(RulesError, match=words):
        from_keys(table)


@pytest.mark.parametrize("params, before, after", [
    ({"vlan": 10}, Rules(), Rules(vlan=10)),
    ({"vlan": 0}, Rules(vlan=10, storm=5), Rules(storm=5)),
    ({"trunk": "10,20"}, Rules(vlan=10), Rules(trunk=frozenset({10, 20}))),
    ({"trunk": "10", "native": 1}, Rules(), Rules(trunk=frozenset({10}), native=1)),
    ({"native": 2}, Rules(trunk=frozenset({10}), native=1),
     Rules(trunk=frozenset({10}), native=2)),
    ({"vlan": 20}, Rules(trunk=frozenset({10}), native=1), Rules(vlan=20)),
    ({"storm": 0}, Rules(vlan=3), Rules(vlan=3, storm=0)),
    ({"rate": 0.0}, Rules(rate=5.0), Rules()),
    ({"rate": 5}, Rules(), Rules(rate=5.0)),
    ({"shut": True}, Rules(vlan=4), Rules(vlan=4)),
])
def test_changed(params: dict[str, Any], before: Rules, after: Rules) -> None:
    assert before.changed(params) == after


@pytest.mark.parametrize("params, before", [
    ({"native": 1}, Rules()), ({"native": 1}, Rules(vlan=10)),
    ({"vlan": 10, "trunk": "20"}, Rules()), ({"vlan": 4095}, Rules()),
    ({"trunk": "0"}, Rules()), ({"storm": -5}, Rules()), ({"rate": -1}, Rules()),
])
def test_changed_refuses(params: dict[str, Any], before: Rules) -> None:
    with pytest.raises(RulesError):
        before.changed(params)


def test_table_words_and_storm_defaults() -> None:
    assert Rules().table().storm == STORM_DEFAULT
    assert Rules(storm=0).table().storm == STORM_OFF
    assert Rules(storm=7).table().storm == 7
    assert Rules(rate=1.5).table().rate_bps == 1_500_000
    assert Rules().entry(tunnel=True)["storm"] == STORM_DEFAULT_PPS
    assert Rules().entry(tunnel=False)["storm"] is None
    assert Rules(storm=0).entry(tunnel=True)["storm"] is None
    assert Rules(trunk=frozenset({1, 2, 3}), native=9).entry(False) == {
        "vlan": None, "trunk": "1-3", "native": 9, "storm": None, "rate": None}


rules = st.one_of(
    st.builds(Rules, vlan=st.integers(1, 4094)),
    st.builds(Rules, trunk=st.frozensets(st.integers(1, 4094), min_size=1),
              native=st.one_of(st.none(), st.integers(1, 4094))),
    st.just(Rules()),
).flatmap(lambda r: st.builds(
    lambda storm, rate: Rules(r.vlan, r.trunk, r.native, storm, rate),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.one_of(st.none(), st.integers(1, 10**5).map(lambda x: x / 10))))


@given(rules)
def test_table_and_keys_round_trip(r: Rules) -> None:
    assert Rules.from_table(r.table()) == r
    assert from_keys(r.keys()) == r
