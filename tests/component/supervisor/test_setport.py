"""setPort's VLAN, storm and rate options on a real supervisor's handlers and port table."""

from __future__ import annotations

import pytest

from etherws import vlan
from etherws.control import Refused
from etherws.portrules import Rules
from etherws.supervisor.handlers import Switch
from etherws.tables import STORM_OFF
from tests.component.supervisor import test_handlers
from tests.component.supervisor.test_handlers import call

switch = test_handlers.switch  # the fixtures of the handler tests
tap_name = test_handlers.tap_name


def test_setport_writes_the_rules_into_the_slot(switch: Switch, tap_name: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    slot = switch.ports.ports[1].slot
    generation = switch.table.generation
    entry = call(switch, "setPort", port=1, trunk="10,20", native=1)["entries"][0]
    assert entry == {"port": 1, "shut": False, "vlan": None, "trunk": "10,20", "native": 1,
                     "storm": None, "rate": None}
    rules = switch.table.rules(slot)
    assert vlan.PortVlan.from_words(rules.vlan, rules.trunk) == vlan.trunk({10, 20}, 1)
    assert switch.table.generation > generation
    call(switch, "setPort", port=1, storm=0, rate=2.5)
    rules = switch.table.rules(slot)
    assert (rules.storm, rules.rate_bps) == (STORM_OFF, 2_500_000)
    listed = call(switch, "listPort")["entries"][0]
    assert {k: listed[k] for k in ("vlan", "trunk", "native", "storm", "rate")} == {
        "vlan": None, "trunk": "10,20", "native": 1, "storm": None, "rate": 2.5}
    assert listed["vlan_drops"] == listed["storm_drops"] == listed["rate_drops"] == 0
    call(switch, "setPort", port=1, vlan=0)  # back to transparent; the limits stay
    port = switch.ports.ports[1]
    assert port.spec is not None and port.spec.rules == Rules(storm=0, rate=2.5)


@pytest.mark.parametrize("params", [
    {}, {"vlan": 4095}, {"trunk": "x"}, {"native": 3}, {"vlan": 1, "trunk": "2"},
    {"storm": -1}, {"rate": -2.0},
])
def test_setport_refusals_change_nothing(switch: Switch, tap_name: str,
                                         params: dict[str, object]) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    before = switch.table.rules(switch.ports.ports[1].slot)
    with pytest.raises(Refused):
        call(switch, "setPort", port=1, shut=True, **params) if params else \
            call(switch, "setPort", port=1)
    assert switch.table.rules(switch.ports.ports[1].slot) == before
    assert not switch.ports.ports[1].shut
