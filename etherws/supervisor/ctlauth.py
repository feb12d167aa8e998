"""Who may use remote control, and who did (I/O: reads key files, runs ZAP in a thread).

pyzmq's ZAP authenticator allows a CURVE client whose public key is in the
``--ctl-clients`` directory. This one also answers two questions an operator asks:
*who* sent a request (the key file's name, not the key: ``admin.key`` is ``admin``, which
the control socket reads from each message's ``User-Id``) and *who was turned away*: a
refused connection is logged with its source address, once per source per minute
(a scanner must not fill the log).
"""

from __future__ import annotations

import logging
import os
import time

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from etherws.logthrottle import Throttle

log = logging.getLogger(__name__)

KEY_SUFFIX = ".key"
USER_ID = "User-Id"
"""The ZeroMQ message property that carries what ZAP said about the sender."""


def key_names(directory: str) -> dict[bytes, str]:
    """z85 public key -> the name of its ``NAME.key`` file in ``directory`` (files that
    are not key files are skipped, as pyzmq's own loader skips them)."""
    names: dict[bytes, str] = {}
    try:
        files = sorted(os.listdir(directory))
    except OSError:
        return names
    for fname in files:
        if not fname.endswith(KEY_SUFFIX):
            continue
        try:
            public, _ = zmq.auth.load_certificate(os.path.join(directory, fname))
        except (OSError, ValueError):
            continue
        names.setdefault(public, fname[: -len(KEY_SUFFIX)])
    return names


class KeyAuthenticator(ThreadAuthenticator):
    """ZAP for the remote control socket: allowed keys from a directory, their file
    names as user ids, refusals logged (throttled per source)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], directory: str) -> None:
        super().__init__(context, log=logging.getLogger("etherws.zap"))
        self.directory = directory
        self._names: dict[bytes, str] = {}
        self._throttle = Throttle()
        self._address = ""

    def reload(self) -> None:
        """Read the allowed keys (again): a key added or removed counts from now on."""
        self.configure_curve(domain="*", location=self.directory)
        self._names = key_names(self.directory)

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The allowed key's file name (``admin`` for ``admin.key``)."""
        z = z85.encode(client_public_key)
        return self._names.get(z, z.decode("ascii"))

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        """pyzmq's check, remembering the source address for the reply's log line."""
        self._address = msg[3].decode("ascii", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        if status_code != b"200":
            held = self._throttle.report(self._address, time.monotonic())
            if held is not None:
                more = f" (and {held} more since the last line)" if held else ""
                log.warning("remote control: refused a connection from %s: %s%s",
                            self._address, status_text.decode("ascii", "replace").lower(),
                            more)
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


def sender(frame: zmq.Frame) -> str:
    """Where a control message came from: ``remote NAME`` for an allowed CURVE key,
    ``local`` for the ipc socket (whose messages carry no user id)."""
    try:
        user = frame.get(USER_ID)
    except zmq.ZMQError:
        return "local"
    return f"remote {user}" if user else "remote"
