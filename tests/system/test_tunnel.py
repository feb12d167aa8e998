"""Two switches in two namespaces joined by a WebSocket tunnel: ws, wss, auth, limits."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import PYTHON, run
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    fresh_rundir,
    pings_both_ways,
    self_signed,
    site,
)

HTPASSWD = Path(__file__).parent.parent / "fixtures" / "htpasswd"




@pytest.fixture
def side_a(net: Underlay, tmp_path: Path) -> Iterator[Site]:
    """Site A: a switch without a server; it dials out."""
    with site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
              server=False) as s:
        yield s


def _side_b(net: Underlay, tmp_path: Path, *options: str) -> AbstractContextManager[Site]:
    """Site B: a switch with a WebSocket server (``options`` for it)."""
    return site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B, *options)


def test_ws_tunnel_pings_both_ways_and_each_side_learns_the_far_mac(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    with _side_b(net, tmp_path) as b:  # default server: all addresses, port 80, path /
        port = connected(side_a, f"ws://{UNDERLAY_B}/")
        pings_both_ways(side_a, b)
        assert side_a.fdb_port(b.host.mac()) == port
        peers = b.tunnel_ports("server")
        assert len(peers) == 1 and peers[0]["state"] == "up"
        assert peers[0]["target"].startswith("203.0.113.1:")
        assert b.fdb_port(side_a.host.mac()) == peers[0]["port"]
        entry = side_a.switch.port(port)
        assert entry and entry["type"] == "client" and entry["target"] == f"ws://{UNDERLAY_B}/"
        assert entry["rx"] > 0 and entry["tx"] > 0


def test_wss_with_cacerts_works_another_ca_fails_and_insecure_works(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "server", UNDERLAY_B)
    other, _ = self_signed(tmp_path, "other", UNDERLAY_B)
    with _side_b(net, tmp_path, "--sslcert", str(cert), "--sslkey", str(key)) as b:
        url = f"wss://{UNDERLAY_B}/"  # port 443 by default with TLS
        refused = side_a.add_client(url, "--cacerts", str(other))
        assert refused.returncode == 1
        assert "certificate verify failed" in refused.stderr
        assert refused.stderr.count("\n") == 1
        assert side_a.tunnel_ports("client") == []  # no port left behind
        assert not os.path.exists(os.path.join(side_a.switch.rundir, "port-2.status"))

        default = side_a.add_client(url)  # the system's CAs do not know a self-signed cert
        assert default.returncode == 1 and "certificate verify failed" in default.stderr

        port = connected(side_a, url, "--cacerts", str(cert))
        pings_both_ways(side_a, b)
        side_a.ctl("delport", str(port))

        port = connected(side_a, url, "--insecure")
        pings_both_ways(side_a, b)
        log = (tmp_path / "a.log").read_text()
        assert "WITHOUT verifying its certificate" in log


def test_htpasswd_sha_and_bcrypt_users_wrong_password_401_and_404(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    sha = (HTPASSWD / "sha1.htpasswd").read_text().splitlines()
    bcrypt = (HTPASSWD / "bcrypt.htpasswd").read_text().splitlines()
    users = tmp_path / "users.htpasswd"
    users.write_text("\n".join([sha[0], bcrypt[1]]) + "\n")  # alice {SHA}, colon bcrypt
    assert sha[0].startswith("alice:{SHA}") and bcrypt[1].startswith("colon:$2y$")
    with _side_b(net, tmp_path, "--htpasswd", str(users), "--path", "/tunnel") as b:
        url = f"ws://{UNDERLAY_B}/tunnel"
        wrong = side_a.add_client(url, "--user", "alice", "--passwd", "not-it")
        assert wrong.returncode == 1 and "authentication failed (HTTP 401)" in wrong.stderr
        assert "not-it" not in wrong.stderr
        nobody = side_a.add_client(url)
        assert nobody.returncode == 1 and "HTTP 401" in nobody.stderr
        lost = side_a.add_client(f"ws://{UNDERLAY_B}/elsewhere", "--user", "alice",
                                 "--passwd", "s3cret!")
        assert lost.returncode == 1 and "HTTP 404" in lost.stderr
        assert side_a.tunnel_ports("client") == []

        port = connected(side_a, url, "--user", "alice", "--passwd", "s3cret!")
        pings_both_ways(side_a, b)
        side_a.ctl("delport", str(port))
        connected(side_a, url, "--user", "colon", "--passwd", "pa:ss:word")
        pings_both_ways(side_a, b)

        # A password is never in a process's arguments, the logs or a reply.
        listing = side_a.ctl("--json", "listport").stdout
        for text in (listing, (tmp_path / "a.log").read_text(),
                     (tmp_path / "b.log").read_text()):
            assert "s3cret!" not in text and "pa:ss:word" not in text
        for pid in [e["pid"] for e in json.loads(listing)["entries"] if e["pid"]]:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert b"pa:ss:word" not in f.read()


def test_password_from_a_piped_stdin(net: Underlay, side_a: Site, tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    shutil.copy(HTPASSWD / "sha1.htpasswd", users)
    with _side_b(net, tmp_path, "--htpasswd", str(users)) as b:
        res = run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", side_a.switch.rundir, "--json",
                  "addport", "client", "--user", "alice", f"ws://{UNDERLAY_B}/",
                  input="s3cret!\n", check=False, timeout_s=60)
        assert res.returncode == 0, res.stderr
        pings_both_ways(side_a, b)


def test_htpasswd_edits_apply_to_new_peers_and_a_garbled_file_keeps_the_last_good_one(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    sha = (HTPASSWD / "sha1.htpasswd").read_text().splitlines()
    users = tmp_path / "users.htpasswd"
    users.write_text(sha[0] + "\n")  # alice only
    os.utime(users, (1, 1))  # an old mtime: the next write is seen as a change at once
    url = f"ws://{UNDERLAY_B}/"
    with _side_b(net, tmp_path, "--htpasswd", str(users)) as b:
        snapshot = os.path.join(b.switch.rundir, "htpasswd")
        assert os.stat(snapshot).st_mode & 0o777 == 0o600
        users.write_text("this is not an htpasswd file\n")
        for _ in range(2):  # alice still gets in, twice; the breakage is logged once
            port = connected(side_a, url, "--user", "alice", "--passwd", "s3cret!")
            side_a.ctl("delport", str(port))
        log = (tmp_path / "b.log").read_text()
        assert log.count("keeping the last good table (1 users)") == 1
        users.write_text(sha[0] + "\n" + sha[1] + "\n")  # and now colon too
        connected(side_a, url, "--user", "colon", "--passwd", "pa:ss:word")
        pings_both_ways(side_a, b)
        assert "is usable again: 2 users" in (tmp_path / "b.log").read_text()
    assert not os.path.exists(snapshot)  # an orderly stop removes it


def test_addport_client_refuses_what_cannot_work_in_one_line(switch, tmp_path: Path) -> None:
    from tests.support import free_port
    local = f"ws://127.0.0.1:{free_port()}/"  # nothing listens there
    (tmp_path / "pw").write_text("pw\n")
    for args, message in (
            (["ws://alice:pw-in-url@127.0.0.1/"], "credentials in the URL are not supported"),
            (["http://127.0.0.1/"], "URL scheme must be ws or wss"),
            (["--cacerts", "/etc/hostname", local], "are for wss:// URLs"),
            (["--cacerts", str(tmp_path / "missing.pem"), "wss://127.0.0.1/"],
             "cannot use --cacerts"),
            (["--passwd-file", str(tmp_path / "pw"), local], "--passwd goes with --user"),
            (["--proxy", "socks5://127.0.0.1:1080", local], "proxy scheme"),
    ):
        res = switch.ctl("addport", "client", *args, check=False, timeout_s=60)
        assert res.returncode == 1, (args, res)
        assert message in res.stderr and res.stderr.count("\n") == 1, (args, res.stderr)
        assert "pw-in-url" not in res.stderr
    assert switch.entries("listport") == []
    kept = switch.ctl("--json", "addport", "client", "--retry", local, timeout_s=60)
    assert json.loads(kept.stdout)["entries"][0]["state"] in ("backoff", "connecting")
    again = switch.ctl("addport", "client", local, check=False)
    assert again.returncode == 1 and "is already port 1" in again.stderr
