"""OpenVPN 2.6 ``dev tap`` over TCP, point-to-point with TLS, as a reference path.

Why these options (checked against Debian 12's OpenVPN 2.6.14):

- TLS mode with certificates, not ``--secret``: static-key mode is deprecated in 2.6.
  In p2p TLS mode both ends negotiate the data cipher from ``--data-ciphers``.
- ``--data-ciphers AES-256-GCM`` for the encrypted path.
- ``--data-ciphers none --cipher none --auth none`` for the unencrypted one: 2.6.14
  accepts it in TLS mode with loud warnings and no ``--allow-...`` flag, negotiates
  ``cipher=none`` and logs ``Data Channel: cipher '[null-cipher]', auth '[null-digest]'``.
  ``--reneg-bytes 0`` as well: otherwise 2.6 treats the null cipher like a 64-bit block
  cipher (SWEET32) and renegotiates TLS every 64 MB, a cost no real "no crypto" setup has.
  The control channel is still TLS 1.3; only the data channel is clear.
- ``--tcp-nodelay``: etherws sets TCP_NODELAY on its tunnels too (one frame per message
  must not wait for Nagle), so both are measured alike.
- ``--disable-dco``: data-channel offload does not do TCP + tap anyway; say so explicitly.
- ``--tun-mtu`` as large as the largest overlay MTU measured: OpenVPN sizes its buffers by
  it; the TAP's own MTU is then set per measurement with ``ip link``.
"""

from __future__ import annotations

import contextlib
import re
from functools import partial
from pathlib import Path

import psutil

from benchlib.certs import Pki
from benchlib.lab import UNDERLAY_B, Lab
from benchlib.paths import BenchPath, Roles, overlay_addresses, tap_pair, wait_reachable
from benchlib.proc import Background, BenchError, in_ns, run, wait_until

START_TIMEOUT_S = 20.0
CIPHERS = {
    True: ["--data-ciphers", "AES-256-GCM"],
    False: ["--data-ciphers", "none", "--cipher", "none", "--auth", "none",
            "--reneg-bytes", "0"],
}
_DATA_CHANNEL = re.compile(r"Data Channel: (.*)")


def version() -> str:
    """The first line of ``openvpn --version``."""
    res = run("openvpn", "--version", check=False)
    return (res.stdout.splitlines() or ["openvpn: unknown version"])[0]


def _logged(daemon: Background, text: str) -> bool:
    """True once ``text`` is in the daemon's output; BenchError if it exited instead."""
    if text in daemon.log.read_text(errors="replace"):
        return True
    if not daemon.alive():
        raise BenchError(f"openvpn exited ({' '.join(daemon.cmd[-4:])}): {daemon.tail()}")
    return False


def openvpn_path(stack: contextlib.ExitStack, lab: Lab, pki: Pki, index: int,
                 encrypted: bool, max_mtu: int) -> BenchPath:
    """Start the OpenVPN pair of path ``index`` (host B listens), address the TAPs, wait
    for pings; stopping the daemons goes on ``stack``."""
    name = "openvpn-aes" if encrypted else "openvpn-none"
    addr_a, addr_b = overlay_addresses(index)
    port = str(1194 + index)
    taps = {"A": lab.ifname(f"o{index}a"), "B": lab.ifname(f"o{index}b")}
    common = ["--dev-type", "tap", "--tun-mtu", str(max_mtu), "--disable-dco",
              "--ca", str(pki.ca), "--dh", "none", "--tcp-nodelay", "--verb", "3",
              *CIPHERS[encrypted]]
    server = ["openvpn", "--dev", taps["B"], "--proto", "tcp-server", "--local", UNDERLAY_B,
              "--lport", port, "--tls-server", "--cert", str(pki.server_cert),
              "--key", str(pki.server_key), *common]
    client = ["openvpn", "--dev", taps["A"], "--proto", "tcp-client",
              "--remote", UNDERLAY_B, port, "--nobind", "--connect-retry", "1",
              "--tls-client", "--cert", str(pki.client_cert), "--key", str(pki.client_key),
              "--remote-cert-tls", "server", *common]
    daemons: dict[str, Background] = {}
    for side, ns, cmd in (("B", lab.ns_b, server), ("A", lab.ns_a, client)):
        daemon = Background(in_ns(ns, *cmd), Path(lab.work, f"{name}-{side}.log"))
        stack.callback(daemon.stop)
        daemons[side] = daemon
        if side == "B":  # the client's first connect then finds a listener
            wait_until(partial(_logged, daemon, "Listening for incoming TCP connection"),
                       START_TIMEOUT_S, f"{name}: the server to listen")
    for side, daemon in daemons.items():
        wait_until(partial(_logged, daemon, "Initialization Sequence Completed"),
                   START_TIMEOUT_S, f"{name}: the {side} side's tunnel to come up")
    mtu = tap_pair(lab, taps, (addr_a, addr_b))

    def processes() -> Roles:
        roles: Roles = []
        for side, daemon in daemons.items():
            try:
                roles.append((f"{side}:openvpn", psutil.Process(daemon.pid)))
            except psutil.NoSuchProcess:
                continue
        return roles

    label = ("OpenVPN 2.6 tap/TCP AES-256-GCM" if encrypted
             else "OpenVPN 2.6 tap/TCP no encryption")
    path = BenchPath(name, label, addr_a, addr_b, mtu, processes)
    wait_reachable(path, lab.ns_a)
    found = _DATA_CHANNEL.findall(daemons["A"].log.read_text(errors="replace"))
    path.notes.append("options: " + " ".join(CIPHERS[encrypted] + ["--tcp-nodelay",
                                                                   "--tun-mtu", str(max_mtu)]))
    path.notes.append("negotiated: " + (found[-1] if found else "(not logged)"))
    return path
