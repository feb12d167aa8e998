"""``--isolate``: two peers of one server reach the server's hosts but not each other.

Three switches on loopback, each with a host namespace behind a netdev port: the server
(``--isolate``) with host 0, and two switches that dial it with hosts 1 and 2.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tests.support import SCALE, free_port, run
from tests.system.harness import Host, Switch, host

H0, H1, H2 = "192.0.2.10", "192.0.2.11", "192.0.2.12"


@contextlib.contextmanager
def switch_with_host(tmp_path: Path, name: str, address: str,
                     *extra: str, server: bool = False) -> Iterator[tuple[Switch, Host]]:
    """A switch with host ``address`` behind a netdev port; both removed afterwards."""
    os.mkdir(tmp_path / name, 0o700)
    with host(address) as h:
        sw = Switch(str(tmp_path / name), tmp_path / f"{name}.log", list(extra),
                    server=server)
        try:
            sw.wait_port(sw.add("netdev", h.outer), "up")
            yield sw, h
        finally:
            sw.close()


def test_isolated_peers_reach_the_servers_hosts_but_not_each_other(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    with switch_with_host(tmp_path, "srv", H0, "--isolate", "--host", "127.0.0.1",
                          "--port", str(port), server=True) as (srv, h0), \
            switch_with_host(tmp_path, "c1", H1) as (c1, h1), \
            switch_with_host(tmp_path, "c2", H2) as (c2, h2):
        assert srv.status()["isolate"] is True
        assert "peers cannot reach each other" in srv.ctl("status").stdout
        for client in (c1, c2):
            n = client.json("addport", "client", url)["entries"][0]["port"]
            client.wait_port(n, "up", timeout_s=20)
        h1.wait_ping(H0, 10 * SCALE, "peer 1's host to reach the server's")
        h2.wait_ping(H0, 10 * SCALE, "peer 2's host to reach the server's")
        assert h0.ping(H1) and h0.ping(H2)  # and back: the server's hosts reach both
        peers = [e for e in srv.entries("listport") if e["type"] == "server"]
        assert len(peers) == 2 and all(e["state"] == "up" for e in peers)
        for _ in range(3):
            assert not h1.ping(H2, timeout_s=1.0)
            assert not h2.ping(H1, timeout_s=1.0)
        # An ARP request that reached a host would have left the asker's address in its
        # neighbour table (Linux notes who asked): neither host ever heard the other.
        assert H1 not in known(h2) and H2 not in known(h1)
        assert H0 in known(h1) and H0 in known(h2)


def known(h: Host) -> set[str]:
    """The addresses whose MAC the host knows (its neighbour entries with one)."""
    out = run("ip", "-n", h.ns, "neigh", "show").stdout
    return {line.split()[0] for line in out.splitlines() if "lladdr" in line}
