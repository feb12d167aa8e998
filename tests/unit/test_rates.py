"""top's rates: counter differences over time, unknown rather than wrong, busiest first."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.rates import COUNTERS, Rates, Row, Snapshot, rates, rows, total


def entry(port: int, rx: int = 0, tx: int = 0, rx_bytes: int = 0, tx_bytes: int = 0,
          drops: int = 0, **extra: Any) -> dict[str, Any]:
    return {"port": port, "type": "tap", "target": f"ethws{port}", "rx": rx, "tx": tx,
            "rx_bytes": rx_bytes, "tx_bytes": tx_bytes, "drops": drops, **extra}


def test_rates_are_differences_per_second_and_bytes_become_bits() -> None:
    r = rates(entry(1, 10, 20, 1000, 2000, 1), entry(1, 110, 70, 126000, 2000, 5), 2.0)
    assert r == Rates(rx_fps=50.0, tx_fps=25.0, rx_bps=500000.0, tx_bps=0.0, drops_ps=2.0)
    assert r.traffic_bps == 500000.0 and r.frames_ps == 75.0


@pytest.mark.parametrize("dt_s", [0.0, -1.0])
def test_no_time_no_rates(dt_s: float) -> None:
    assert rates(entry(1), entry(1, 5), dt_s) is None


@pytest.mark.parametrize("key", COUNTERS)
def test_a_counter_gone_backwards_means_unknown_not_negative(key: str) -> None:
    before = entry(1, 10, 10, 10, 10, 10)
    assert rates(before, {**before, key: 9}, 1.0) is None
    assert rates(before, {**before, key: 10}, 1.0) == Rates()


@pytest.mark.parametrize("bad", [None, "12", 1.5, True, -1])
@pytest.mark.parametrize("key", COUNTERS)
def test_a_counter_missing_or_not_a_count_means_unknown(key: str, bad: Any) -> None:
    before = entry(1)
    assert rates(before, {**before, key: bad}, 1.0) is None
    assert rates({**before, key: bad}, before, 1.0) is None
    without = {k: v for k, v in before.items() if k != key}
    assert rates(before, without, 1.0) is None


@pytest.mark.parametrize("field, value", [("port", 2), ("type", "netdev"),
                                          ("target", "eth9")])
def test_entries_of_different_ports_have_no_rates(field: str, value: Any) -> None:
    assert rates(entry(1), {**entry(1, 5), field: value}, 1.0) is None


def test_rows_are_sorted_busiest_first_then_by_frames_then_by_number() -> None:
    before = Snapshot(10.0, [entry(1), entry(2), entry(3), entry(4), entry(5)])
    after = Snapshot(11.0, [
        entry(1, rx=1, rx_bytes=100),
        entry(2, rx=10, rx_bytes=5000),
        entry(3, tx=1, tx_bytes=5000),   # same bits as 2, fewer frames
        entry(4),                       # idle
        entry(5),                       # idle, after 4 by number
        entry(6, rx=99, rx_bytes=9999),  # new: no rates yet, so it sorts as idle
    ])
    shown = rows(before, after)
    assert [r.entry["port"] for r in shown] == [2, 3, 1, 4, 5, 6]
    assert shown[-1].rates is None
    assert shown[0].rates == Rates(rx_fps=10.0, rx_bps=40000.0)


def test_the_first_snapshot_has_no_rates_and_keeps_port_order() -> None:
    shown = rows(None, Snapshot(1.0, [entry(3), entry(1), entry(2)]))
    assert [r.entry["port"] for r in shown] == [1, 2, 3]
    assert all(r.rates is None for r in shown)


def test_a_deleted_port_is_not_shown_and_a_re_added_number_starts_over() -> None:
    before = Snapshot(0.0, [entry(1, 50, 50, 5000, 5000), entry(2, 7)])
    after = Snapshot(1.0, [entry(1, 3, 0, 300, 0)])  # another port got number 1
    assert rows(before, after) == [Row(entry(1, 3, 0, 300, 0), None)]


def test_a_port_entry_without_a_number_is_shown_without_rates() -> None:
    odd = {"type": "tap", "target": "x"}
    shown = rows(Snapshot(0.0, [odd]), Snapshot(1.0, [odd, entry(1, 1)]))
    assert [r.entry.get("port") for r in shown] == [None, 1]


def test_total_adds_up_the_known_rates_only() -> None:
    shown = [Row(entry(1), Rates(1, 2, 3, 4, 5)), Row(entry(2), None),
             Row(entry(3), Rates(10, 20, 30, 40, 50))]
    assert total(shown) == Rates(11, 22, 33, 44, 55)
    assert total([]) == Rates()


counts = st.integers(min_value=0, max_value=2**40)


@given(st.lists(st.tuples(counts, counts, counts, counts, counts), min_size=1, max_size=8),
       st.lists(st.tuples(counts, counts, counts, counts, counts), min_size=1, max_size=8),
       st.floats(min_value=0.01, max_value=100))
def test_rates_are_never_negative_and_rows_keep_every_port(
        a: list[tuple[int, ...]], b: list[tuple[int, ...]], dt_s: float) -> None:
    before = Snapshot(0.0, [entry(i + 1, *c) for i, c in enumerate(a)])
    after = Snapshot(dt_s, [entry(i + 1, *c) for i, c in enumerate(b)])
    shown = rows(before, after)
    assert sorted(r.entry["port"] for r in shown) == list(range(1, len(b) + 1))
    for r in shown:
        if r.rates is not None:
            assert min(r.rates.rx_fps, r.rates.tx_fps, r.rates.rx_bps, r.rates.tx_bps,
                       r.rates.drops_ps) >= 0
    keys = [-(r.rates.traffic_bps if r.rates else 0.0) for r in shown]
    assert keys == sorted(keys)
