"""The control protocol: JSON-RPC 2.0 between etherws-ctl and the supervisor (pure).

Transport: ZeroMQ; the supervisor binds a ROUTER (``ipc://RUNDIR/ctl.sock`` by default),
``etherws-ctl`` connects a REQ. One request per message, one reply per request::

    request  {"jsonrpc": "2.0", "id": "<unique text>", "method": "etherws.control.<name>",
              "params": {...}}
    result   {"jsonrpc": "2.0", "id": ..., "result": {"entries": [...], ...}}
    error    {"jsonrpc": "2.0", "id": ..., "error": {"code": <int>, "message": "<one line>",
              "data": {"reason": "<slug>"}}}

Method names are etherws 1.3's under ``etherws.control.``; ``COMMANDS`` lists every
method with its parameters, its ``etherws-ctl`` verb and its view. A request id is
unique per request (ctl uses a random one), so the supervisor can answer a retried
request from its reply cache instead of doing the work twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Mapping

from etherws.errors import EtherwsError

JSONRPC = "2.0"
PREFIX = "etherws.control."
MAX_REQUEST = 64 * 1024
"""Largest request the supervisor serves; a larger one gets an error reply."""
MAX_MESSAGE = 1024 * 1024
"""Largest message the control socket takes at all (ZMQ_MAXMSGSIZE: libzmq drops the
connection of a peer that sends more, so it bounds memory, not what a client hears)."""


class Code(IntEnum):
    """JSON-RPC error codes; REFUSED is the application's "no, because ..."."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    REFUSED = -32000


class RpcError(EtherwsError):
    """An error reply: raised by handlers (as Refused) and by reply decoding."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _default_reason(code)


class Refused(RpcError):
    """The supervisor understood the request and says no (unknown port, bad MTU, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(Code.REFUSED, message, reason)


def _default_reason(code: int) -> str:
    try:
        return Code(code).name.lower().replace("_", "-")
    except ValueError:
        return "error"


class PortRef:
    """A parameter type: a port's number (an int) or its name (a str)."""


# A parameter spec: name -> (type, required). bool is checked apart from int, since
# True is an int to isinstance.
Spec = Mapping[str, tuple[type, bool]]
_PORT: Spec = {"port": (PortRef, True)}


@dataclass(frozen=True)
class Command:
    """One control command: the JSON-RPC method, its parameters, the ``etherws-ctl`` verb
    that sends it (None: sent by ``etherws-supervisor`` only) and the name of the view that
    shows its result (None: nothing is printed). The supervisor's handler table, ctl's
    parser and ctl's views are checked against this table by a test."""

    method: str
    params: Spec
    verb: str | None
    view: str | None
    """A view of etherws-ctl's (``ctl.render.VIEWS``); etherws-supervisor prints the
    results of the commands it sends itself."""
    changes: bool = True
    """It changes the switch: the supervisor logs every such request (an audit trail)."""


COMMANDS: tuple[Command, ...] = (
    Command("addPort", {
        "type": (str, True),
        "target": (str, True),
        # client ports only; user, passwd, proxy and proxy_env are secrets: the
        # supervisor hands them to the worker on its stdin and never echoes them
        "user": (str, False),
        "passwd": (str, False),
        "cacerts": (str, False),
        "insecure": (bool, False),
        "proxy": (str, False),
        "proxy_env": (dict, False),
        "retry": (bool, False),
        "no_offload": (bool, False),
        "name": (str, False),
        "bridge": (str, False),
    }, "addport", "ports"),
    Command("setPort", {
        "port": (PortRef, True),
        "shut": (bool, False),
        # etherws.portrules: VLAN (0: none), trunk VIDs ("10,20-29" or "all") and its
        # native VLAN, storm control in frames/s and a rate limit in Mbit/s (0: none)
        "vlan": (int, False),
        "trunk": (str, False),
        "native": (int, False),
        "storm": (int, False),
        "rate": (float, False),
    }, "setport", None),
    Command("delPort", _PORT, "delport", None),
    Command("restartPort", _PORT, "restartport", None),
    Command("listPort", {}, "listport", "ports", changes=False),
    Command("setInterface", {
        "port": (PortRef, True),
        "address": (str, False),
        "netmask": (str, False),
        "mtu": (int, False),
    }, "setif", None),
    Command("listInterface", {}, "listif", "interfaces", changes=False),
    Command("listFdb", {}, "listfdb", "fdb", changes=False),
    Command("flushFdb", {"port": (PortRef, False)}, "flushfdb", None),
    Command("getStatus", {}, "status", "status", changes=False),
    # etherws.probe: round trip and largest frame across a tunnel port (size: 64..65535,
    # default 1514; the supervisor refuses other sizes)
    Command("probePort", {"port": (PortRef, True), "size": (int, False)}, "probe", "probe",
            changes=False),
    Command("saveConfig", {}, "save", "saved"),
    # a peer token (etherws.token): lifetime in s, the VLAN and MAC quota it binds its
    # peer to. Audited like a change (the parameters; the token, in the reply, never is).
    Command("mintToken", {
        "ttl": (float, False),
        "vlan": (int, False),
        "max_macs": (int, False),
    }, "token", "token"),
    Command("reloadConfig", {}, None, "changes"),
    Command("shutdown", {}, None, None),
)
BY_METHOD: dict[str, Command] = {c.method: c for c in COMMANDS}
SECRETS = frozenset({"passwd", "proxy", "proxy_env", "user"})
"""Parameters never written to a log (``loggable`` masks them)."""
BY_VERB: dict[str, Command] = {c.verb: c for c in COMMANDS if c.verb is not None}
METHODS: dict[str, Spec] = {c.method: c.params for c in COMMANDS}
"""Every method with its parameters."""


@dataclass(frozen=True)
class Request:
    """A decoded, validated request; ``method`` is the short name (``listPort``)."""

    id: str | int
    method: str
    params: dict[str, Any]


def loggable(params: Mapping[str, Any]) -> str:
    """``params`` as one log line, secrets masked: ``target='ws://h/' passwd=***``."""
    return " ".join(f"{k}={'***' if k in SECRETS else repr(v)}" for k, v in params.items())


def encode_request(method: str, params: Mapping[str, Any], req_id: str) -> bytes:
    """A request for the short method name ``method``."""
    msg = {"jsonrpc": JSONRPC, "id": req_id, "method": PREFIX + method, "params": dict(params)}
    return json.dumps(msg).encode()


def _check_params(method: str, params: Any) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(Code.INVALID_PARAMS, "params must be an object")
    spec = METHODS[method]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise RpcError(Code.INVALID_PARAMS, f"{method}: unknown parameter {unknown[0]!r}")
    for name, (typ, required) in spec.items():
        if name not in params or params[name] is None:
            if required:
                raise RpcError(Code.INVALID_PARAMS, f"{method}: missing parameter {name!r}")
            continue
        value = params[name]
        if typ is PortRef:
            ok = isinstance(value, (int, str)) and not isinstance(value, bool)
            what = "a port number or name"
        elif typ is float:  # JSON has one kind of number: 50 is a float too
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            what = "a number"
        else:
            ok = isinstance(value, bool) if typ is bool else (
                isinstance(value, typ) and not isinstance(value, bool))
            what = typ.__name__
        if not ok:
            raise RpcError(Code.INVALID_PARAMS, f"{method}: {name!r} must be {what}")
    return {k: v for k, v in params.items() if v is not None}


def decode_request(data: bytes) -> Request:
    """Parse and validate a request; raises RpcError (with the id when one was readable)."""
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: not a crash
        raise RpcError(Code.PARSE_ERROR, "request is not JSON") from None
    if not isinstance(msg, dict) or msg.get("jsonrpc") != JSONRPC:
        raise RpcError(Code.INVALID_REQUEST, "not a JSON-RPC 2.0 request")
    method = msg.get("method")
    if not isinstance(method, str) or not method.startswith(PREFIX):
        raise RpcError(Code.METHOD_NOT_FOUND, f"unknown method {method!r}")
    short = method[len(PREFIX):]
    if short not in METHODS:
        raise RpcError(Code.METHOD_NOT_FOUND, f"unknown method {method!r}")
    req_id = msg.get("id")
    if not isinstance(req_id, (str, int)) or isinstance(req_id, bool):
        raise RpcError(Code.INVALID_REQUEST, "request id must be a string or an integer")
    return Request(req_id, short, _check_params(short, msg.get("params")))


def request_id(data: bytes) -> str | int | None:
    """The id of a request that may not decode, for addressing an error reply."""
    try:
        rid = json.loads(data).get("id")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def encode_result(req_id: str | int | None, result: Mapping[str, Any]) -> bytes:
    """A result reply."""
    return json.dumps({"jsonrpc": JSONRPC, "id": req_id, "result": dict(result)}).encode()


def encode_error(req_id: str | int | None, err: RpcError) -> bytes:
    """An error reply."""
    error = {"code": int(err.code), "message": err.message, "data": {"reason": err.reason}}
    return json.dumps({"jsonrpc": JSONRPC, "id": req_id, "error": error}).encode()


def decode_reply(data: bytes, req_id: str) -> dict[str, Any]:
    """The result of a reply to ``req_id``; raises RpcError for an error reply.

    A reply that is not JSON-RPC, or answers another request, raises RpcError with
    INTERNAL_ERROR: the client cannot trust it.
    """
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RpcError(Code.INTERNAL_ERROR, "reply is not JSON") from None
    if not isinstance(msg, dict) or msg.get("jsonrpc") != JSONRPC or msg.get("id") != req_id:
        raise RpcError(Code.INTERNAL_ERROR, "reply is not an answer to this request")
    if "error" in msg:
        err = msg["error"] if isinstance(msg["error"], dict) else {}
        detail = err.get("data")
        data_: dict[str, Any] = detail if isinstance(detail, dict) else {}
        code = err.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = Code.INTERNAL_ERROR
        raise RpcError(code, str(err.get("message", "unknown error")),
                       str(data_.get("reason", "")))
    result = msg.get("result")
    if not isinstance(result, dict):
        raise RpcError(Code.INTERNAL_ERROR, "reply has no result object")
    return result


Poll = Callable[[], "Mapping[str, Any] | None"]


@dataclass(frozen=True)
class Later:
    """A handler's answer that is not known yet (``addport client`` waits for the first
    connection). ``poll`` returns the result, raises RpcError, or returns None: not yet."""

    poll: Poll


@dataclass(frozen=True)
class Pending:
    """A reply still to come: the server calls ``reply`` until it gives bytes."""

    id: str | int
    poll: Poll

    def reply(self) -> bytes | None:
        """The encoded reply once the answer is known, else None."""
        try:
            result = self.poll()
        except RpcError as err:
            return encode_error(self.id, err)
        return None if result is None else encode_result(self.id, result)


Handler = Callable[[dict[str, Any]], "Mapping[str, Any] | Later"]


def dispatch(data: bytes, handlers: Mapping[str, Handler]) -> bytes | Pending:
    """Decode a request, run its handler, encode the reply (or return it Pending).

    Bad requests and RpcError from a handler become error replies; any other exception
    from a handler is a bug and propagates to the caller.
    """
    if len(data) > MAX_REQUEST:
        return encode_error(request_id(data), RpcError(
            Code.INVALID_REQUEST, f"request of {len(data)} bytes; at most {MAX_REQUEST}"))
    try:
        req = decode_request(data)
    except RpcError as err:
        return encode_error(request_id(data), err)
    handler = handlers.get(req.method)
    if handler is None:
        return encode_error(req.id, RpcError(Code.METHOD_NOT_FOUND,
                                             f"method {req.method!r} is not served here"))
    try:
        result = handler(req.params)
    except RpcError as err:
        return encode_error(req.id, err)
    if isinstance(result, Later):
        return Pending(req.id, result.poll)
    return encode_result(req.id, result)
