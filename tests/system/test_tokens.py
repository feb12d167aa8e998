"""Peer tokens on real namespaces: site B's switch requires htpasswd, mints a token bound to
VLAN 10 with a quota of 2 MACs, and site A's client port gets in with the token alone.

Site B has its TAP host 198.51.100.2 on an access port of VLAN 10 and host 198.51.100.3 (its
own namespace, on a netdev port) on VLAN 20; site A's TAP (198.51.100.1) is transparent: its
frames enter B untagged through the token's port, which makes them VLAN 10's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etherws import token
from etherws.paths import RunDir
from etherws.runtime import tokenkey
from tests.support import wait_until
from tests.system.harness import sigkill
from tests.system.test_vlan import FLOOD, OVERLAY_C, entry, host_on
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    fresh_rundir,
    ns_python,
    site,
)

HTPASSWD = Path(__file__).resolve().parents[1] / "fixtures" / "htpasswd" / "sha1.htpasswd"

# A raw WebSocket client (websocket-client, not ours): one upgrade per argument, either
# "query:T" (ws://B/?token=T) or "protocol:T" (subprotocol etherws.token.T); prints the
# status and the subprotocol of each.
ATTEMPTS = r"""
import sys, websocket
host = sys.argv[1]
held = []
for arg in sys.argv[2:]:
    how, _, text = arg.partition(":")
    url = f"ws://{host}/" + (f"?token={text}" if how == "query" else "")
    protocols = [f"etherws.token.{text}"] if how == "protocol" else None
    try:
        ws = websocket.create_connection(url, timeout=10, subprotocols=protocols)
    except websocket.WebSocketBadStatusException as e:
        print(e.status_code, "-", flush=True)
        continue
    print(ws.getstatus(), ws.getsubprotocol(), flush=True)
    held.append(ws)
for ws in held:
    ws.close()
"""


@pytest.fixture
def sites(net: Underlay, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B,
              "--htpasswd", str(HTPASSWD)) as b, \
            site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
                 server=False) as a:
        yield a, b


def mint(b: Site, *options: str) -> str:
    """``etherws-ctl token``: the token is the last line."""
    out = b.ctl("token", *options).stdout.splitlines()
    assert out[0].startswith("expires ") and len(out[-1]) == token.TOKEN_CHARS, out
    return out[-1]


def attempts(a: Site, *args: str) -> list[tuple[int, str]]:
    res = ns_python(a.ns, ATTEMPTS, UNDERLAY_B, *args)
    assert res.returncode == 0, res.stderr
    return [(int(s), p) for s, p in (line.split() for line in res.stdout.splitlines())]


def test_a_token_binds_a_peer_to_its_vlan_and_mac_quota(sites: tuple[Site, Site]) -> None:
    a, b = sites
    started = time.monotonic()
    with host_on(b.ns, OVERLAY_C) as c:
        c_port = b.switch.add("netdev", c.outer)
        b.switch.wait_port(c_port, "up")
        b.ctl("setport", str(b.tap_port), "--vlan", "10")
        b.ctl("setport", str(c_port), "--vlan", "20")
        minted = b.switch.json("token", "--vlan", "10", "--max-macs", "2")["entries"][0]
        assert (minted["vlan"], minted["max_macs"]) == (10, 2)
        text = minted["token"]
        refused = b.ctl("token", "--ttl", "99999999", check=False)
        assert refused.returncode == 1 and "--ttl must be between" in refused.stderr

        # (a) no user, no password: the token alone gets the client port in
        tunnel = connected(a, f"ws://{UNDERLAY_B}/?token={text}")
        a.host.wait_ping(OVERLAY_B, 15, "VLAN 10 through the token's port")
        assert not c.ping(OVERLAY_A, 1.0) and not c.ping(OVERLAY_A, 1.0)  # VLAN 20: no
        peer = b.tunnel_ports("server")[0]
        assert (peer["token_vlan"], peer["max_macs"], peer["vlan"]) == (10, 2, None)
        assert f"{10} (token)" in b.ctl("listport").stdout

        # (b) the token as a subprotocol, echoed; (c) wrong, expired and in use: 401
        other = mint(b, "--ttl", "60")
        key = tokenkey.read(RunDir(b.switch.rundir).token_key)
        expired = token.mint(key, time.time() - 120, 60, 10, 2, b"expired!")
        forged = token.mint(b"x" * 32, time.time(), 60, 10, 2, b"forged!!")
        got = attempts(a, f"protocol:{other}", f"query:{forged}", f"query:{expired}",
                       f"query:{text}")
        # websocket-client hands the echoed protocol back lower-cased (it checks it
        # without case); test_wshandshake_token checks the echo byte for byte
        assert got == [(101, f"etherws.token.{other}".lower()), (401, "-"), (401, "-"),
                       (401, "-")]
        log = b.switch.log_text()
        assert "bad token signature" in log and "token expired" in log
        assert "in use by another connection" in log
        for secret in (text, other, expired, forged):
            assert secret.partition(".")[2] not in log

        # (d) the quota: a second MAC is learned, a third one's frames are dropped
        mac_a = a.host.mac()
        learned = wait_until(lambda: {e["mac"] for e in b.switch.entries("listfdb")
                                      if e["port"] == peer["port"] and e["vid"] == 10},
                             10, "A's MAC learned in VLAN 10 on the token's port")
        assert learned == {mac_a}
        flood(a, "02eeeeeeee02", 5)
        wait_until(lambda: b.fdb_port("02:ee:ee:ee:ee:02") == peer["port"], 10,
                   "the second MAC learned on the token's port")
        before = entry(b, peer["port"])["drops"]
        flood(a, "02eeeeeeee03", 20)
        wait_until(lambda: entry(b, peer["port"])["drops"] >= before + 20, 10,
                   "the third MAC's frames dropped and counted")
        assert b.fdb_port("02:ee:ee:ee:ee:03") is None
        a.host.wait_ping(OVERLAY_B, 5, "the first MAC still welcome")
        assert entry(a, tunnel)["state"] == "up"

        # a restarted broker reads the claims again when the peer's worker re-attaches
        old = b.switch.status()["broker"]
        sigkill(old["pid"])
        wait_until(lambda: (s := b.switch.status()["broker"]) and s["pid"] != old["pid"]
                   and s["state"] == "up", 10, "a new broker on B")
        a.host.wait_ping(OVERLAY_B, 10, "traffic back through the token's port")
        assert not c.ping(OVERLAY_A, 1.0)
        before = entry(b, peer["port"])["drops"]
        flood(a, "02eeeeeeee04", 20)
        wait_until(lambda: entry(b, peer["port"])["drops"] >= before + 20, 10,
                   "the quota in force after the broker's restart")
    assert time.monotonic() - started < 30


def flood(a: Site, src: str, n: int) -> None:
    """``n`` broadcasts from MAC ``src`` out of A's TAP host, into the tunnel."""
    code = FLOOD.replace("02eeeeeeee01", src)
    res = ns_python(a.ns, code, a.host.inner, str(n))
    assert res.returncode == 0, res.stderr

