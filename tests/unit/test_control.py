"""etherws.control: JSON-RPC 2.0 requests, replies, validation and dispatch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import control
from etherws.control import METHODS, PREFIX, Code, PortRef, Refused, RpcError

SAMPLE = {str: "x", int: 1, bool: True, dict: {"no_proxy": "x"}, PortRef: 1, float: 1.5}
WRONG: dict[type, list[Any]] = {
    PortRef: [1.5, True, False, [], {}],
    str: [1, 1.5, True, [], {}],
    int: ["1", 1.0, True, False, [], {}],   # True is an int to isinstance, not to us
    bool: [1, 0, "true", 1.0, [], {}],
    dict: [1, "x", True, []],
    float: ["1", True, False, [], {}],     # 1 is a number to JSON: accepted
}


def valid_params(method: str, optional: bool = True) -> dict[str, Any]:
    """Parameters that pass ``method``'s spec (with or without the optional ones)."""
    return {name: SAMPLE[typ] for name, (typ, required) in METHODS[method].items()
            if required or optional}


def raw(**fields: Any) -> bytes:
    """A request message with exactly these fields."""
    return json.dumps(fields).encode()


def request(method: str, params: Any = None, req_id: Any = "r1", **extra: Any) -> bytes:
    """A request for the full method name of ``method``."""
    return raw(jsonrpc="2.0", id=req_id, method=PREFIX + method, params=params, **extra)


def rpc_error(fn: Any, *args: Any) -> RpcError:
    """The RpcError ``fn(*args)`` raises."""
    with pytest.raises(RpcError) as info:
        fn(*args)
    return info.value


# --- the methods table -----------------------------------------------------------------
def test_methods_keep_1_3_names_and_add_new_ones() -> None:
    assert {"addPort", "setPort", "delPort", "listPort", "setInterface", "listInterface",
            "listFdb", "getStatus", "restartPort", "flushFdb", "shutdown"} <= set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("optional", [True, False])
def test_round_trip_every_method(method: str, optional: bool) -> None:
    params = valid_params(method, optional)
    req = control.decode_request(control.encode_request(method, params, "abc"))
    assert req == control.Request("abc", method, params)


def test_encode_request_shape() -> None:
    msg = json.loads(control.encode_request("delPort", {"port": 3}, "id-1"))
    assert msg == {"jsonrpc": "2.0", "id": "id-1", "method": "etherws.control.delPort",
                   "params": {"port": 3}}


REQUIRED = [(m, n) for m, spec in sorted(METHODS.items()) for n, (_, r) in spec.items() if r]
TYPED = [(m, n, bad) for m, spec in sorted(METHODS.items())
         for n, (typ, _) in spec.items() for bad in WRONG[typ]]


@pytest.mark.parametrize("method, name", REQUIRED)
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_required_param(method: str, name: str, how: str) -> None:
    params = valid_params(method)
    if how == "absent":
        del params[name]
    else:
        params[name] = None
    err = rpc_error(control.decode_request, request(method, params))
    assert err.code == Code.INVALID_PARAMS and name in err.message and method in err.message


@pytest.mark.parametrize("method", sorted(METHODS))
def test_unknown_param(method: str) -> None:
    err = rpc_error(control.decode_request, request(method, {**valid_params(method), "bogus": 1}))
    assert err.code == Code.INVALID_PARAMS and "bogus" in err.message


@pytest.mark.parametrize("method, name, bad", TYPED)
def test_wrong_type(method: str, name: str, bad: Any) -> None:
    err = rpc_error(control.decode_request, request(method, {**valid_params(method), name: bad}))
    assert err.code == Code.INVALID_PARAMS and name in err.message


@pytest.mark.parametrize("method, name", [(m, n) for m, spec in sorted(METHODS.items())
                                          for n, (_, r) in spec.items() if not r])
def test_optional_null_is_dropped(method: str, name: str) -> None:
    params = {**valid_params(method, optional=False), name: None}
    assert control.decode_request(request(method, params)).params == valid_params(method, False)


@pytest.mark.parametrize("method", [m for m, spec in sorted(METHODS.items())
                                    if not any(r for _, r in spec.values())])
def test_params_may_be_absent_or_null(method: str) -> None:
    assert control.decode_request(request(method, None)).params == {}
    no_params = raw(jsonrpc="2.0", id=1, method=PREFIX + method)
    assert control.decode_request(no_params).params == {}


@pytest.mark.parametrize("params", [[], [1], "x", 3, True])
def test_params_must_be_an_object(params: Any) -> None:
    assert rpc_error(control.decode_request, request("listPort", params)).code == \
        Code.INVALID_PARAMS


# --- malformed requests ----------------------------------------------------------------
@pytest.mark.parametrize("data, code", [
    (b"", Code.PARSE_ERROR),
    (b"{", Code.PARSE_ERROR),
    (b"\xff\xfe", Code.PARSE_ERROR),
    (b"nul", Code.PARSE_ERROR),
    (b"[]", Code.INVALID_REQUEST),
    (b"42", Code.INVALID_REQUEST),
    (b"null", Code.INVALID_REQUEST),
    (raw(id="a", method=PREFIX + "listPort"), Code.INVALID_REQUEST),             # no jsonrpc
    (raw(jsonrpc="1.0", id="a", method=PREFIX + "listPort"), Code.INVALID_REQUEST),
    (raw(jsonrpc=2.0, id="a", method=PREFIX + "listPort"), Code.INVALID_REQUEST),
    (raw(jsonrpc="2.0", id="a"), Code.METHOD_NOT_FOUND),                         # no method
    (raw(jsonrpc="2.0", id="a", method=7), Code.METHOD_NOT_FOUND),
    (raw(jsonrpc="2.0", id="a", method="listPort"), Code.METHOD_NOT_FOUND),      # no prefix
    (raw(jsonrpc="2.0", id="a", method=PREFIX + "reboot"), Code.METHOD_NOT_FOUND),
    (raw(jsonrpc="2.0", id="a", method=PREFIX), Code.METHOD_NOT_FOUND),
    (raw(jsonrpc="2.0", method=PREFIX + "listPort"), Code.INVALID_REQUEST),      # notification
])
def test_malformed_requests(data: bytes, code: Code) -> None:
    assert rpc_error(control.decode_request, data).code == code


@pytest.mark.parametrize("req_id", [None, True, False, 1.5, [], {}])
def test_bad_request_ids(req_id: Any) -> None:
    assert rpc_error(control.decode_request, request("listPort", req_id=req_id)).code == \
        Code.INVALID_REQUEST


@pytest.mark.parametrize("req_id", ["x", "", 0, -3, 2**40])
def test_good_request_ids(req_id: Any) -> None:
    assert control.decode_request(request("listPort", req_id=req_id)).id == req_id


@pytest.mark.parametrize("data, expected", [
    (request("listPort", req_id="q"), "q"),
    (request("nope", req_id=5), 5),
    (raw(id="z"), "z"),
    (raw(id=True), None),
    (raw(id=None), None),
    (raw(id=1.5), None),
    (b"[1, 2]", None),
    (b"not json", None),
    (b"\xff", None),
])
def test_request_id(data: bytes, expected: Any) -> None:
    assert control.request_id(data) == expected


def test_deeply_nested_request_is_a_parse_error() -> None:
    data = b"[" * 100_000
    assert len(data) < control.MAX_REQUEST * 2
    assert rpc_error(control.decode_request, data).code == Code.PARSE_ERROR


@given(st.binary(max_size=200))
def test_decode_request_raises_only_rpc_error(data: bytes) -> None:
    try:
        control.decode_request(data)
    except RpcError as err:
        assert isinstance(err.code, int) and err.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10)


@given(st.sampled_from(sorted(METHODS)), st.dictionaries(st.text(max_size=8), json_values,
                                                          max_size=4))
def test_any_params_validate_or_raise_invalid_params(method: str, params: dict) -> None:
    try:
        req = control.decode_request(request(method, params))
    except RpcError as err:
        assert err.code == Code.INVALID_PARAMS
        return
    for name, value in req.params.items():
        typ = METHODS[method][name][0]
        assert type(value) in ((int, str) if typ is PortRef else (typ,))


# --- errors ------------------------------------------------------------------------------
def test_refused() -> None:
    err = Refused("no-such-port", "no port 7")
    assert (err.code, err.message, err.reason, str(err)) == \
        (Code.REFUSED, "no port 7", "no-such-port", "no port 7")
    assert isinstance(err, RpcError)


@pytest.mark.parametrize("code, reason", [
    (Code.PARSE_ERROR, "parse-error"), (Code.INVALID_PARAMS, "invalid-params"),
    (Code.METHOD_NOT_FOUND, "method-not-found"), (Code.REFUSED, "refused"),
    (-1, "error"), (12345, "error"),
])
def test_default_reasons(code: int, reason: str) -> None:
    assert RpcError(code, "m").reason == reason


# --- dispatch ----------------------------------------------------------------------------
def _reply(data: bytes) -> dict[str, Any]:
    msg = json.loads(data)
    assert msg["jsonrpc"] == "2.0"
    return msg


def test_dispatch_result() -> None:
    seen = []

    def handler(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        return {"entries": [{"port": params["port"]}]}

    out = control.dispatch(request("delPort", {"port": 3}, "d1"), {"delPort": handler})
    assert _reply(out) == {"jsonrpc": "2.0", "id": "d1", "result": {"entries": [{"port": 3}]}}
    assert seen == [{"port": 3}]


@pytest.mark.parametrize("exc, code, reason", [
    (Refused("no-such-port", "no port 3"), Code.REFUSED, "no-such-port"),
    (RpcError(Code.INVALID_PARAMS, "mtu out of range"), Code.INVALID_PARAMS, "invalid-params"),
    (RpcError(-32099, "busy", "busy"), -32099, "busy"),
])
def test_dispatch_handler_errors(exc: RpcError, code: int, reason: str) -> None:
    def handler(params: dict[str, Any]) -> dict[str, Any]:
        raise exc

    out = _reply(control.dispatch(request("delPort", {"port": 3}, 9), {"delPort": handler}))
    assert out == {"jsonrpc": "2.0", "id": 9,
                   "error": {"code": code, "message": exc.message, "data": {"reason": reason}}}


def test_dispatch_bad_requests_keep_the_id() -> None:
    out = _reply(control.dispatch(request("delPort", {"port": 1.5}, "k"), {}))
    assert out["id"] == "k" and out["error"]["code"] == Code.INVALID_PARAMS
    out = _reply(control.dispatch(b"{garbage", {}))
    assert out["id"] is None and out["error"]["code"] == Code.PARSE_ERROR


def test_dispatch_later_answers_when_the_answer_is_known() -> None:
    answers: list[Any] = [None, None, {"entries": [{"port": 4}]}]
    handler = lambda params: control.Later(lambda: answers.pop(0))  # noqa: E731
    pending = control.dispatch(request("addPort", {"type": "client", "target": "ws://h/"},
                                       "L1"), {"addPort": handler})
    assert isinstance(pending, control.Pending) and pending.id == "L1"
    assert pending.reply() is None and pending.reply() is None
    assert _reply(pending.reply()) == {"jsonrpc": "2.0", "id": "L1",
                                       "result": {"entries": [{"port": 4}]}}


def test_dispatch_later_can_refuse() -> None:
    def poll() -> None:
        raise Refused("connect-failed", "cannot connect to ws://h/: refused")

    pending = control.dispatch(request("addPort", {"type": "client", "target": "ws://h/"}, 7),
                               {"addPort": lambda params: control.Later(poll)})
    assert isinstance(pending, control.Pending)
    out = _reply(pending.reply())
    assert out["id"] == 7 and out["error"]["data"]["reason"] == "connect-failed"


def test_dispatch_method_not_served() -> None:
    out = _reply(control.dispatch(request("listFdb", {}, "m"), {"listPort": lambda p: {}}))
    assert out["id"] == "m" and out["error"]["code"] == Code.METHOD_NOT_FOUND
    assert out["error"]["data"]["reason"] == "method-not-found"


def test_dispatch_lets_bugs_through() -> None:
    def handler(params: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        control.dispatch(request("listPort", {}), {"listPort": handler})


# --- replies -----------------------------------------------------------------------------
def test_decode_result() -> None:
    data = control.encode_result("a", {"entries": [1, 2]})
    assert control.decode_reply(data, "a") == {"entries": [1, 2]}


def test_decode_error_reply() -> None:
    data = control.encode_error("a", Refused("no-such-port", "no port 7"))
    err = rpc_error(control.decode_reply, data, "a")
    assert (err.code, err.message, err.reason) == (Code.REFUSED, "no port 7", "no-such-port")


@pytest.mark.parametrize("error, code, message, reason", [
    ({"code": -32000, "message": "no"}, -32000, "no", "refused"),                  # no data
    ({"code": -32602, "message": "bad", "data": "x"}, -32602, "bad", "invalid-params"),
    ({"message": "odd"}, Code.INTERNAL_ERROR, "odd", "internal-error"),            # no code
    ({}, Code.INTERNAL_ERROR, "unknown error", "internal-error"),
    ("a string", Code.INTERNAL_ERROR, "unknown error", "internal-error"),
    ({"code": 7, "message": "x", "data": {"reason": "why"}}, 7, "x", "why"),
])
def test_decode_odd_error_objects(error: Any, code: int, message: str, reason: str) -> None:
    err = rpc_error(control.decode_reply, raw(jsonrpc="2.0", id="a", error=error), "a")
    assert (err.code, err.message, err.reason) == (code, message, reason)


@pytest.mark.parametrize("code", ["x", None, [], {}])
def test_decode_garbage_error_code(code: Any) -> None:
    err = rpc_error(control.decode_reply, raw(jsonrpc="2.0", id="a", error={"code": code}), "a")
    assert err.code == Code.INTERNAL_ERROR


@pytest.mark.parametrize("data", [
    b"", b"{", b"\xff", b"[]", b"null", b'"text"',
    raw(jsonrpc="2.0", id="b", result={}),            # another request's reply
    raw(jsonrpc="2.0", id=None, result={}),
    raw(jsonrpc="2.0", result={}),                    # no id
    raw(jsonrpc="1.0", id="a", result={}),
    raw(id="a", result={}),
    raw(jsonrpc="2.0", id="a"),                       # neither result nor error
    raw(jsonrpc="2.0", id="a", result=[1]),
    raw(jsonrpc="2.0", id="a", result="ok"),
    raw(jsonrpc="2.0", id="a", result=None),
])
def test_decode_reply_rejects(data: bytes) -> None:
    assert rpc_error(control.decode_reply, data, "a").code == Code.INTERNAL_ERROR


def test_decode_reply_ids_compare_by_type() -> None:
    data = raw(jsonrpc="2.0", id=1, result={})
    assert rpc_error(control.decode_reply, data, "1").code == Code.INTERNAL_ERROR


results = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@given(st.text(max_size=32), results)
def test_result_round_trip(req_id: str, result: dict) -> None:
    assert control.decode_reply(control.encode_result(req_id, result), req_id) == result


@given(st.text(max_size=32), st.integers(-2**31, 2**31), st.text(max_size=40),
       st.text(min_size=1, max_size=20))
def test_error_round_trip(req_id: str, code: int, message: str, reason: str) -> None:
    err = rpc_error(control.decode_reply, control.encode_error(req_id, RpcError(code, message,
                                                                                 reason)), req_id)
    assert (err.code, err.message, err.reason) == (code, message, reason)


@pytest.mark.parametrize("ref", [3, "lan"])
def test_a_port_is_named_by_number_or_name(ref: Any) -> None:
    assert control.decode_request(request("delPort", {"port": ref})).params == {"port": ref}


def test_an_oversized_request_gets_an_error_reply_with_its_id() -> None:
    body = request("listPort", {"pad": "x" * control.MAX_REQUEST}, "big-1")
    out = _reply(control.dispatch(body, {"listPort": lambda p: {"entries": []}}))
    assert out["id"] == "big-1" and out["error"]["code"] == Code.INVALID_REQUEST
    assert f"at most {control.MAX_REQUEST}" in out["error"]["message"]
