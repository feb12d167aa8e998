"""The control client: JSON-RPC requests to the supervisor over ZeroMQ REQ (I/O).

A Lazy Pirate client (zguide, ``lpclient.py``): send the request, poll for the reply
with a per-try timeout, and when none comes close the REQ socket (it would otherwise
stay stuck waiting for that reply) and send again on a fresh one. Every try of one
call sends the same request id, so a supervisor that did the work but whose reply got
lost answers the retry from its reply cache instead of doing the work twice.

A refused ipc:// connection never surfaces as an error in ZeroMQ (connect is
asynchronous: a REQ connect to a socket file it may not open returns OK and the reply
just never comes, measured with pyzmq 27 as user nobody),
so the socket file is checked first and the two common mistakes, "no supervisor" and
"not root", are reported at once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from types import TracebackType
from typing import Any

import zmq

from etherws import control
from etherws.errors import EtherwsError
from etherws.runtime import curvekeys

IPC = "ipc://"
TCP = "tcp://"


class ControlSetupError(EtherwsError):
    """An endpoint, key file or setting a control connection cannot use."""


class Unreachable(EtherwsError):
    """The supervisor did not answer: no socket, no permission, or no reply in time."""


class PermissionDenied(Unreachable):
    """The control socket exists but this user may not use it (etherws-ctl needs root)."""


class ControlClient:
    """A connection to one supervisor's control socket; use as a context manager.

    ``timeout_s`` bounds a whole ``call`` (all its tries); ``retries`` is the number of
    tries, each waiting ``timeout_s / retries`` for the reply.
    """

    def __init__(self, endpoint: str, timeout_s: float = 5.0, retries: int = 2,
                 curve: tuple[str, str] | None = None) -> None:
        if timeout_s <= 0:
            raise ControlSetupError("the control timeout must be positive")
        if retries < 1:
            raise ControlSetupError("a control call needs at least one try")
        self._keys: tuple[bytes, bytes, bytes] | None = None
        if endpoint.startswith(TCP):
            if curve is None:
                # Never talk to a remote supervisor in clear text.
                raise ControlSetupError("tcp:// control needs --ctl-key and --ctl-server-key")
            public, secret = curvekeys.load_secret(curve[0])  # or KeyFileError
            self._keys = (public, secret, curvekeys.load_public(curve[1]))
        elif not endpoint.startswith(IPC) or len(endpoint) == len(IPC):
            raise ControlSetupError(f"not a control endpoint: {endpoint!r} (use ipc://PATH)")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None

    # --- lifetime ---------------------------------------------------------------
    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and terminate this client's ZeroMQ context (idempotent)."""
        self._drop_socket()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def _drop_socket(self) -> None:
        if self._sock is not None:
            # LINGER 0: an unanswered request must not keep the context from terminating.
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self) -> zmq.Socket[bytes]:
        if self._ctx is None:
            raise RuntimeError("the control client is closed")
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            # Replies are small; a bigger one is garbage and must not exhaust memory.
            sock.setsockopt(zmq.MAXMSGSIZE, 16 * 1024 * 1024)
            if self._keys is not None:
                sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self._keys
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    # --- requests ---------------------------------------------------------------
    @property
    def socket_path(self) -> str:
        """The filesystem path of the ipc:// endpoint."""
        return self.endpoint[len(IPC):]

    def check_socket(self) -> None:
        """Raise Unreachable at once when the ipc:// socket file cannot be used."""
        if not self.endpoint.startswith(IPC):
            return  # a refused tcp:// peer (wrong key) only ever shows as a timeout
        path = self.socket_path
        rundir = os.path.dirname(path) or "."
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise Unreachable(f"no supervisor: {path} does not exist") from None
        except PermissionError:
            raise PermissionDenied(
                f"permission denied on {rundir} (etherws-ctl must run as root)") from None
        # connect(2) on a Unix socket needs write permission on the file; ZeroMQ would
        # hide the EACCES and make us wait for the whole timeout.
        if not os.access(path, os.W_OK):
            raise PermissionDenied(
                f"permission denied on {path} (etherws-ctl must run as root)")

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its result.

        Raises control.RpcError for an error reply (or a reply that cannot be trusted),
        Unreachable when no reply came within ``timeout_s``.
        """
        req_id = uuid.uuid4().hex
        request = control.encode_request(method, params, req_id)
        end = time.monotonic() + self.timeout_s
        per_try_s = self.timeout_s / self.retries
        for attempt in range(self.retries):
            self.check_socket()
            remaining_s = end - time.monotonic()
            if remaining_s <= 0:
                break
            reply = self._try_once(request, min(per_try_s, remaining_s))
            if reply is None:
                continue
            if _answers(reply, req_id) or attempt == self.retries - 1:
                return control.decode_reply(reply, req_id)
            # A reply to some other request (a buggy or confused server): ignore it and
            # ask again; REQ is ready to send once it has received.
        raise Unreachable(f"no reply from the supervisor at {self.endpoint} within "
                          f"{self.timeout_s:g}s ({self.retries} tries)")

    def _try_once(self, request: bytes, wait_s: float) -> bytes | None:
        """Send ``request`` and wait up to ``wait_s`` for the reply; None on timeout.

        Unless a reply came, the REQ socket is closed: it would stay stuck waiting for
        this reply and refuse the next send (EFSM), so the next try starts afresh.
        """
        sock = self._socket()
        reply: bytes | None = None
        try:
            wait_ms = max(1, int(wait_s * 1000))
            # A REQ with no usable peer may block in send; bound it like the receive.
            sock.setsockopt(zmq.SNDTIMEO, wait_ms)
            started = time.monotonic()
            try:
                sock.send(request)
            except zmq.Again:
                return None
            left_ms = max(0, wait_ms - int((time.monotonic() - started) * 1000))
            if sock.poll(left_ms, zmq.POLLIN):
                reply = sock.recv()
            return reply
        finally:
            if reply is None:
                self._drop_socket()


def _answers(reply: bytes, req_id: str) -> bool:
    """True when ``reply`` is a JSON object carrying ``req_id`` (or is not JSON at all:
    decode_reply then reports it as garbage)."""
    try:
        msg = json.loads(reply)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return True
    return not isinstance(msg, dict) or msg.get("id") == req_id
