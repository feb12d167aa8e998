"""The service manager's notification protocol: READY, STATUS, WATCHDOG, ... (I/O).

systemd's sd_notify is one datagram of ``KEY=value`` lines to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket). It is written here in
a few lines rather than through a package: the protocol is that one sendto(), and the
packages that wrap it (python-systemd, sdnotify) add a C build or nothing at all.
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine \
            else None
        """The watchdog interval systemd expects pings within (None: no watchdog)."""
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to tell."""
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """One notification; False when it could not be sent (never raises)."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        """Start-up (or a reload) is done."""
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """A reload begins (systemd's Type=notify-reload wants the clock with it)."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
