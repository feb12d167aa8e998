"""Ports in the configuration file: parsing, numbering, uniqueness, reload plans."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from etherws.errors import EtherwsError
from etherws.portconfig import (
    Change,
    Plan,
    PortConfigError,
    PortSpec,
    assign_numbers,
    parse_ports,
    plan,
    saved_tables,
)

BASE = "/etc/etherws"


def ports(text: str) -> list[PortSpec]:
    return parse_ports(tomllib.loads(text)["ports"], BASE, "f.toml")


def error(value: Any) -> str:
    with pytest.raises(PortConfigError) as err:
        parse_ports(value, BASE, "f.toml")
    assert isinstance(err.value, EtherwsError) and not isinstance(err.value, ValueError)
    return str(err.value)


def test_the_documented_example() -> None:
    specs = ports('''
[[ports]]
tap = "ethws0"
name = "lan"
address = ["198.51.100.1/24", "2001:db8::1/64"]
mtu = 1500
bridge = "br0"
shut = false

[[ports]]
netdev = "eth1"

[[ports]]
client = "wss://hostB.example/"
name = "to-hostB"
user = "alice"
passwd-file = "/etc/etherws/alice.pass"
cacerts = "hostB.pem"
proxy = "http://proxy.example:3128"
''')
    assert specs == [
        PortSpec("tap", "ethws0", name="lan", number=1,
                 address=("198.51.100.1/24", "2001:db8::1/64"), mtu=1500, bridge="br0"),
        PortSpec("netdev", "eth1", number=2),
        PortSpec("client", "wss://hostB.example/", name="to-hostB", number=3, user="alice",
                 passwd_file="/etc/etherws/alice.pass", cacerts="/etc/etherws/hostB.pem",
                 proxy="http://proxy.example:3128"),
    ]


def test_relative_paths_are_relative_to_the_file() -> None:
    [spec] = parse_ports([{"client": "wss://h/", "user": "u", "passwd-file": "../p/u.pass",
                           "cacerts": "ca.pem", "proxy-auth-file": "./px"}], "/srv/etc", "f")
    assert (spec.passwd_file, spec.cacerts, spec.proxy_auth_file) == (
        "/srv/p/u.pass", "/srv/etc/ca.pem", "/srv/etc/px")


def test_a_single_address_may_be_a_string() -> None:
    [spec] = parse_ports([{"tap": "t0", "address": "192.0.2.1/24"}], BASE)
    assert spec.address == ("192.0.2.1/24",)
    assert spec.to_table() == {"tap": "t0", "number": 1, "address": ["192.0.2.1/24"]}


def test_numbers_follow_declaration_order_around_explicit_ones() -> None:
    specs = parse_ports([{"tap": "a"}, {"tap": "b", "number": 2}, {"tap": "c"},
                         {"tap": "d", "number": 9}, {"tap": "e"}], BASE)
    assert [(s.target, s.number) for s in specs] == [
        ("a", 1), ("b", 2), ("c", 3), ("d", 9), ("e", 4)]


@pytest.mark.parametrize("table, words", [
    ({"tap": "t0", "colour": "red"}, ["port #1 (t0)", "unknown key 'colour'"]),
    ({"tap": "t0", "mtu": "1500"}, ["'mtu' must be an integer"]),
    ({"tap": "t0", "shut": 1}, ["'shut' must be true or false"]),
    ({"tap": "t0", "number": True}, ["'number' must be an integer"]),
    ({"tap": "t0", "netdev": "e"}, ["exactly one of tap, netdev, client"]),
    ({"name": "x"}, ["port #1 (x)", "exactly one of"]),
    ({"tap": "t0/1"}, ["not an interface name"]),
    ({"tap": "a" * 16}, ["not an interface name"]),
    ({"tap": "t0", "bridge": "b r"}, ["'bridge'", "not an interface name"]),
    ({"netdev": "e0", "bridge": "br0"}, ["'bridge' is an option of tap ports"]),
    ({"tap": "t0", "user": "u"}, ["'user' is an option of client ports"]),
    ({"client": "wss://h/", "mtu": 1400}, ["'mtu' is not an option of client ports"]),
    ({"tap": "t0", "address": "300.1.1.1/24"}, ["'address'"]),
    ({"tap": "t0", "address": [1]}, ["'address' must be a string or a list"]),
    ({"tap": "t0", "mtu": 10}, ["'mtu'"]),
    ({"tap": "t0", "number": 0}, ["'number' must be between 1"]),
    ({"tap": "t0", "name": "12"}, ["'name'", "not a port name"]),
    ({"tap": "t0", "name": "1st"}, ["'name'", "a letter, then"]),
    ({"tap": "t0", "name": "a b"}, ["'name'"]),
    ({"client": "http://h/"}, ["scheme must be ws or wss"]),
    ({"client": "ws://h/", "insecure": True}, ["are for wss:// URLs"]),
    ({"tap": "t0", "no-offload": True}, ["'no-offload' is an option of client ports"]),
    ({"client": "ws://h/", "no-offload": 1}, ["'no-offload'", "true or false"]),
    ({"client": "wss://h/", "insecure": True, "cacerts": "c"}, ["not both"]),
    ({"client": "wss://h/", "passwd-file": "p"}, ["'passwd-file' goes with 'user'"]),
    ({"client": "wss://h/", "user": "a:b"}, ["'user' cannot contain ':'"]),
    ({"client": "wss://h/", "proxy": "http://u:p@px:3128"}, ["proxy-auth-file"]),
    ({"client": "wss://h/", "user": "u", "passwd": "pw"}, ["never written inline",
                                                           "'passwd-file'"]),
])
def test_bad_tables_are_refused_naming_file_port_and_key(table: dict[str, Any],
                                                         words: list[str]) -> None:
    message = error([table])
    assert message.startswith("f.toml: port #1")
    for word in words:
        assert word in message, message


def test_a_client_url_never_appears_in_an_error() -> None:
    message = error([{"client": "ws://alice:pw-Zq9@h/"}])
    assert "pw-Zq9" not in message and "credentials" in message


def test_ports_must_be_tables() -> None:
    assert "must be [[ports]] tables" in error({"tap": "x"})
    assert "must be [[ports]] tables" in error(["tap"])


@pytest.mark.parametrize("tables, words", [
    ([{"tap": "a", "number": 2}, {"tap": "b", "number": 2}], ["'number' 2", "port a"]),
    ([{"tap": "a", "name": "x"}, {"tap": "b", "name": "x"}], ["'name' 'x'", "port 1"]),
    ([{"tap": "a"}, {"tap": "a"}], ["tap a is also port 1"]),
    ([{"tap": "a"}, {"netdev": "a"}], ["is also port 1"]),
    ([{"client": "ws://h/"}, {"client": "ws://h/", "name": "n"}], ["client n is also port 1"]),
    ([{"tap": "a"}, {"netdev": "b", "name": "a"}], ["'name' 'a' is port 1's interface"]),
])
def test_duplicates_are_refused(tables: list[dict[str, Any]], words: list[str]) -> None:
    message = error(tables)
    for word in words:
        assert word in message, message


def test_a_name_equal_to_its_own_target_is_fine() -> None:
    [spec] = parse_ports([{"tap": "a", "name": "a"}], BASE)
    assert spec.label == "a"


def test_to_table_round_trips() -> None:
    specs = ports('''
[[ports]]
tap = "t0"
name = "lan"
address = ["192.0.2.1/24", "2001:db8::1/64"]
mtu = 9000
bridge = "br0"
shut = true
[[ports]]
client = "wss://h/x"
user = "u"
passwd-file = "/p"
cacerts = "/c"
proxy = "http://px:1"
proxy-auth-file = "/a"
[[ports]]
client = "wss://h/y"
insecure = true
no-offload = true
''')
    assert parse_ports([s.to_table() for s in specs], "/elsewhere") == specs
    assert specs[2].no_offload and specs[2].to_table()["no-offload"] is True
    assert "no-offload" not in specs[1].to_table()


def _spec(target: str, number: int, **kw: Any) -> PortSpec:
    return PortSpec("tap", target, number=number, **kw)


def test_plan_adds_removes_and_changes_in_place() -> None:
    running = {1: _spec("a", 1), 2: _spec("b", 2, mtu=1400), 3: _spec("c", 3), 4: _spec("d", 4)}
    wanted = [_spec("a", 1), _spec("b", 2, mtu=9000, shut=True), _spec("x", 3),
              _spec("e", 5)]
    p = plan(running, wanted)
    assert [s.number for s in p.remove] == [4, 3]
    assert [s.number for s in p.add] == [3, 5]
    assert p.change == (Change(running[2], wanted[1]),)
    assert p.change[0].what() == ["mtu", "shut"]
    assert p.unchanged == (1,)
    assert p.summary() == ["removed port 4 (d)", "removed port 3 (c)", "added port 3 (x)",
                           "added port 5 (e)", "changed port 2 (b): mtu, shut"]


def test_plan_restarts_a_client_whose_worker_options_changed() -> None:
    old = PortSpec("client", "wss://h/", number=1, user="u")
    new = PortSpec("client", "wss://h/", number=1, user="v")
    renamed = PortSpec("client", "wss://h/", number=1, user="u", name="n")
    assert plan({1: old}, [new]) == Plan(remove=(old,), add=(new,))
    assert plan({1: old}, [renamed]).change == (Change(old, renamed),)


def test_plan_of_the_same_ports_changes_nothing() -> None:
    specs = assign_numbers([PortSpec("tap", "a"), PortSpec("netdev", "b")])
    p = plan({s.number: s for s in specs if s.number}, specs)
    assert (p.remove, p.add, p.change, p.unchanged) == ((), (), (), (1, 2))
    assert p.summary() == ["nothing changed"]


def test_saved_tables_keep_places_numbers_and_relative_paths() -> None:
    existing = [{"tap": "a", "mtu": 1400}, {"netdev": "gone"},
                {"client": "wss://h/", "user": "u", "passwd-file": "u.pass"},
                {"tap": "z", "number": 9}]
    running = [PortSpec("tap", "a", number=1, mtu=9000, shut=True),
               PortSpec("client", "wss://h/", number=3, user="u",
                        passwd_file=f"{BASE}/u.pass"),
               PortSpec("tap", "z", number=9),
               PortSpec("tap", "new", number=10, name="n")]
    assert saved_tables(existing, running, BASE) == [
        (0, {"tap": "a", "mtu": 9000, "shut": True}),
        (2, {"client": "wss://h/", "number": 3, "user": "u", "passwd-file": "u.pass"}),
        (3, {"tap": "z", "number": 9}),
        (None, {"tap": "new", "name": "n", "number": 10}),
    ]
    tables = [t for _, t in saved_tables(existing, running, BASE)]
    assert parse_ports(tables, BASE) == running


def test_saved_tables_without_a_file() -> None:
    running = [PortSpec("tap", "a", number=1), PortSpec("tap", "b", number=2)]
    assert saved_tables([], running, BASE) == [(None, {"tap": "a"}), (None, {"tap": "b"})]
    assert saved_tables([{"bogus": 1}], running, BASE) == [
        (None, {"tap": "a"}), (None, {"tap": "b"})]


# --- VLAN, storm and rate keys -----------------------------------------------------------------
def test_rule_keys_parse_round_trip_and_change_in_place() -> None:
    from etherws.portrules import Rules

    specs = ports('[[ports]]\ntap = "a"\nvlan = 10\n'
                  '[[ports]]\ntap = "b"\ntrunk = [20, 10]\nnative = 1\nstorm = 0\nrate = 2.5\n')
    assert specs[0].rules == Rules(vlan=10)
    assert specs[1].rules == Rules(trunk=frozenset({10, 20}), native=1, storm=0, rate=2.5)
    table = specs[1].to_table()
    assert {k: table[k] for k in ("trunk", "native", "storm", "rate")} == {
        "trunk": "10,20", "native": 1, "storm": 0, "rate": 2.5}
    assert parse_ports([specs[0].to_table(), table], BASE) == specs
    wanted = ports('[[ports]]\ntap = "a"\nvlan = 20\nrate = 1\n'
                   '[[ports]]\ntap = "b"\ntrunk = [20, 10]\nnative = 1\nstorm = 0\nrate = 2.5\n')
    p = plan({s.number or 0: s for s in specs}, wanted)
    assert not p.add and not p.remove and p.unchanged == (2,)
    assert p.summary() == ["changed port 1 (a): vlan, rate"]


@pytest.mark.parametrize("extra, words", [
    ("vlan = 4095", "between 1 and 4094"), ('trunk = "x"', "not a VLAN id"),
    ("native = 3", "'native'"), ("storm = -1", "'storm'"), ('rate = "1M"', "'rate'"),
    ('vlan = 1\ntrunk = "2"', "not both"),
])
def test_bad_rule_keys_are_refused_naming_the_port(extra: str, words: str) -> None:
    msg = error(tomllib.loads(f'[[ports]]\ntap = "a"\n{extra}\n')["ports"])
    assert msg.startswith("f.toml: port #1 (a): ") and words in msg
