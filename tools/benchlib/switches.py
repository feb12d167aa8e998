"""etherws over ws:// or wss:// as a bench path: two switches, as tools/demo starts them.

Host B runs a supervisor with the WebSocket server (its own port, so the ws and wss
switches coexist) and a TAP port; host A a supervisor without a server, a TAP port and
a client port to host B. The processes of the path are both supervisors and all their
descendants: broker, TAP workers, the client, the listener and the accepted peer.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import psutil

from benchlib.lab import UNDERLAY_B, Lab
from benchlib.paths import (
    OVERLAY_PREFIX,
    BenchPath,
    Roles,
    overlay_addresses,
    process_roles,
    wait_reachable,
)
from benchlib.proc import in_ns, run

PY = sys.executable
"""The venv's interpreter (tools/bench runs us with .venv/bin/python): etherws is in it."""
CTL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 60.0
"""addport client returns once the tunnel is up; the TLS handshake alone may take 10 s."""


def role_of(proc: psutil.Process) -> str:
    """``supervisor``, ``broker``, ``tap``, ``client``, ``peer``, ``listener``: the last
    part of the module the process runs (``python -m etherws.workers.tap``)."""
    argv = proc.cmdline()
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].rsplit(".", 1)[-1]
    return proc.name()


class Switch:
    """One supervisor in a namespace, driven through etherws-ctl."""

    def __init__(self, ns: str, rundir: Path, log: Path) -> None:
        self.ns, self.rundir, self.log = ns, rundir, log

    def start(self, *options: str) -> None:
        """``etherws-supervisor start`` (detached; returns once its control socket answers)."""
        self.rundir.mkdir(mode=0o700)
        run(*in_ns(self.ns, PY, "-m", "etherws.supervisor", "start", "--rundir",
                   str(self.rundir), "--logfile", str(self.log), *options),
            timeout_s=START_TIMEOUT_S)

    def stop(self) -> None:
        """``etherws-supervisor stop`` when it runs (it removes its TAPs and sockets)."""
        if (self.rundir / "supervisor.pid").exists():
            run(PY, "-m", "etherws.supervisor", "stop", "--rundir", str(self.rundir),
                check=False, timeout_s=START_TIMEOUT_S)

    def ctl(self, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> dict[str, Any]:
        """``etherws-ctl --json ARGS``: the reply (BenchError with its message on failure)."""
        res = run(PY, "-m", "etherws.ctl.cli", "--rundir", str(self.rundir), "--json", *args,
                  timeout_s=timeout_s)
        reply: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
        return reply

    def add_tap(self, name: str, address: str) -> int:
        """A TAP port with ``address``; its port number."""
        port = int(self.ctl("addport", "tap", name)["entries"][0]["port"])
        self.ctl("setif", str(port), "--address", address)
        return port

    def processes(self, side: str) -> Roles:
        """The supervisor and every descendant, each with its role."""
        try:
            pid = int((self.rundir / "supervisor.pid").read_text())
            root = psutil.Process(pid)
        except (OSError, ValueError, psutil.NoSuchProcess):
            return []
        return process_roles(side, root, role_of)


def etherws_path(stack: contextlib.ExitStack, lab: Lab, index: int,
                 tls: tuple[Path, Path] | None, offload: bool = True) -> BenchPath:
    """Both switches of path ``index`` joined by one tunnel (wss:// when ``tls`` gives
    the server's certificate and key; ``offload`` False: both with --no-offload);
    stopping them goes on ``stack``."""
    name = ("etherws-wss" if tls else "etherws-ws") + ("" if offload else "-nooff")
    addr_a, addr_b = overlay_addresses(index)
    port = 8443 + index if tls else 8080 + index
    a = Switch(lab.ns_a, lab.work / f"{name}-a", lab.work / f"{name}-a.log")
    b = Switch(lab.ns_b, lab.work / f"{name}-b", lab.work / f"{name}-b.log")
    server = ["--port", str(port)] + ([] if offload else ["--no-offload"])
    client: list[str] = []
    if tls:
        cert, key = tls
        server += ["--sslcert", str(cert), "--sslkey", str(key)]
        client += ["--cacerts", str(cert)]  # self-signed: its own CA
    stack.callback(b.stop)
    b.start(*server)
    tap_b = b.add_tap(lab.ifname(f"e{index}b"), f"{addr_b}/{OVERLAY_PREFIX}")
    stack.callback(a.stop)
    a.start("--no-server", *([] if offload else ["--no-offload"]))
    tap_a = a.add_tap(lab.ifname(f"e{index}a"), f"{addr_a}/{OVERLAY_PREFIX}")
    url = f"{'wss' if tls else 'ws'}://{UNDERLAY_B}:{port}/"
    a.ctl("addport", "client", *client, url, timeout_s=CONNECT_TIMEOUT_S)

    def mtu(value: int) -> None:
        # setif --mtu: the supervisor sets the TAP's MTU over netlink, as an operator would.
        a.ctl("setif", str(tap_a), "--mtu", str(value))
        b.ctl("setif", str(tap_b), "--mtu", str(value))

    label = f"etherws {'wss' if tls else 'ws'}:// ({url}{'' if offload else ', --no-offload'})"
    path = BenchPath(name, label, addr_a, addr_b, mtu,
                     lambda: a.processes("A") + b.processes("B"),
                     reference="openvpn-aes" if tls else "openvpn-none")
    wait_reachable(path, lab.ns_a)
    return path
