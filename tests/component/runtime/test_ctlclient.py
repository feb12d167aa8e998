"""etherws.runtime.ctlclient against a real ZeroMQ ROUTER on an ipc:// endpoint in the test process.

The ROUTER is ``fakes.FakeSupervisor`` with a responder per test; the ``serve`` and
``endpoint`` fixtures are in ``conftest``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable, Iterator

import pytest

from etherws import control
from etherws.control import Code, Refused, RpcError
from etherws.errors import EtherwsError
from etherws.paths import RunDir
from etherws.runtime.ctlclient import ControlClient, Unreachable
from tests.component.fakes import answer, swallow
from tests.support import SCALE, wait_until

SLACK_S = 1.0 * SCALE


@pytest.fixture
def client(endpoint: str) -> Iterator[Callable[..., ControlClient]]:
    """Make clients for the endpoint; all of them are closed afterwards."""
    made: list[ControlClient] = []

    def make(timeout_s: float = 2.0, retries: int = 2) -> ControlClient:
        c = ControlClient(endpoint, timeout_s=timeout_s, retries=retries)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# --- answers --------------------------------------------------------------------------
def test_result(serve: Any, client: Any) -> None:
    fake = serve(answer({"entries": [{"port": 1}]}))
    assert client().call("listPort", {}) == {"entries": [{"port": 1}]}
    msg = json.loads(fake.requests[0])
    assert msg["method"] == "etherws.control.listPort" and msg["params"] == {}
    assert len(msg["id"]) == 32 and int(msg["id"], 16) >= 0


def test_params_are_sent(serve: Any, client: Any) -> None:
    fake = serve(answer({"entries": []}))
    client().call("setInterface", {"port": 3, "mtu": 1400})
    assert control.decode_request(fake.requests[0]).params == {"port": 3, "mtu": 1400}


def test_each_call_has_its_own_id(serve: Any, client: Any) -> None:
    fake = serve(answer({}))
    c = client()
    for _ in range(3):
        c.call("getStatus", {})
    assert len(set(fake.ids())) == 3


def test_error_reply(serve: Any, client: Any) -> None:
    def refuse(body: bytes, index: int) -> bytes:
        req = control.decode_request(body)
        refused = Refused("no-such-port", f"no port {req.params['port']}")
        return control.encode_error(req.id, refused)

    serve(refuse)
    with pytest.raises(RpcError) as info:
        client().call("delPort", {"port": 7})
    err = info.value
    assert (err.code, err.message, err.reason) == (Code.REFUSED, "no port 7", "no-such-port")


def test_garbage_reply(serve: Any, client: Any) -> None:
    fake = serve(lambda body, index: b"\x00not json")
    with pytest.raises(RpcError) as info:
        client().call("listPort", {})
    assert info.value.code == Code.INTERNAL_ERROR
    assert len(fake.requests) == 1  # garbage is an answer: not retried


# --- retries ------------------------------------------------------------------------------
def test_retry_resends_the_same_id(serve: Any, client: Any) -> None:
    ok = answer({"entries": ["second try"]})
    fake = serve(lambda body, index: None if index == 0 else ok(body, index))
    started = time.monotonic()
    assert client(timeout_s=2.0, retries=2).call("addPort", {"type": "tap", "target": "t0"}) \
        == {"entries": ["second try"]}
    assert time.monotonic() - started < 2.0 + SLACK_S
    assert len(fake.requests) == 2
    assert fake.requests[0] == fake.requests[1]  # same id, same request: the reply cache works


def test_wrong_reply_id_is_ignored(serve: Any, client: Any) -> None:
    def confused(body: bytes, index: int) -> bytes:
        req = control.decode_request(body)
        return control.encode_result("someone-else" if index == 0 else req.id, {"n": index})

    fake = serve(confused)
    assert client().call("listFdb", {}) == {"n": 1}
    assert fake.ids()[0] == fake.ids()[1]


def test_always_wrong_reply_id_is_an_error(serve: Any, client: Any) -> None:
    fake = serve(lambda body, index: control.encode_result("someone-else", {}))
    with pytest.raises(RpcError) as info:
        client(retries=3).call("listFdb", {})
    assert info.value.code == Code.INTERNAL_ERROR
    assert len(fake.requests) == 3


@pytest.mark.parametrize("timeout_s, retries", [(1.0, 2), (0.9, 3), (0.5, 1)])
def test_no_answer_is_unreachable_in_time(serve: Any, client: Any, timeout_s: float,
                                          retries: int) -> None:
    fake = serve(swallow)
    c = client(timeout_s=timeout_s, retries=retries)
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        c.call("listPort", {})
    elapsed = time.monotonic() - started
    assert timeout_s * 0.9 <= elapsed <= timeout_s + SLACK_S
    assert c.endpoint in str(info.value) and f"{timeout_s:g}s" in str(info.value)
    wait_until(lambda: len(fake.requests) == retries, 5, "every try to arrive")
    assert len(set(fake.ids())) == 1
    # The client recovers: once the supervisor answers, the next call works.
    fake.respond = answer({"entries": ["back"]})
    assert c.call("listPort", {}) == {"entries": ["back"]}


def test_supervisor_gone_between_tries(serve: Any, client: Any, endpoint: str) -> None:
    def vanish(body: bytes, index: int) -> None:
        os.unlink(endpoint[len("ipc://"):])  # the supervisor exits without answering

    fake = serve(vanish)
    c = client(timeout_s=2.0, retries=2)
    started = time.monotonic()
    with pytest.raises(Unreachable, match="does not exist"):
        c.call("listPort", {})
    assert time.monotonic() - started < 2.0  # told after the first try, not at the end
    fake.close()
    serve(answer({"entries": ["restarted"]}))  # a new supervisor on the same socket path
    assert c.call("listPort", {}) == {"entries": ["restarted"]}


# --- no supervisor ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["socket", "rundir"])
def test_missing_socket_is_unreachable_at_once(rundir: str, where: str) -> None:
    root = rundir if where == "socket" else os.path.join(rundir, "gone")
    endpoint = RunDir(root).ctl_endpoint
    started = time.monotonic()
    with ControlClient(endpoint, timeout_s=5) as c, pytest.raises(Unreachable) as info:
        c.call("listPort", {})
    assert time.monotonic() - started < 0.5 * SCALE
    assert str(info.value) == f"no supervisor: {RunDir(root).ctl_sock} does not exist"


def test_stale_socket_file_times_out(rundir: str) -> None:
    # A supervisor killed by SIGKILL leaves its socket file behind: connect is refused,
    # which ZeroMQ retries silently; the client must still give up in time.
    path = RunDir(rundir).ctl_sock
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stale.bind(path)  # bound, never listening: connect() gets ECONNREFUSED
        started = time.monotonic()
        with ControlClient("ipc://" + path, timeout_s=0.5) as c, \
                pytest.raises(Unreachable, match="no reply"):
            c.call("listPort", {})
        assert time.monotonic() - started <= 0.5 + SLACK_S
    finally:
        stale.close()


# --- construction and lifetime -------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"endpoint": "tcp://127.0.0.1:5555"}, "tcp:// control needs --ctl-key and --ctl-server-key"),
    ({"endpoint": "tcp://127.0.0.1:5555", "curve": ("k", "s")}, "cannot read CURVE key k: "),
    ({"endpoint": "/run/etherws/ctl.sock"}, "not a control endpoint"),
    ({"endpoint": "ipc://"}, "not a control endpoint"),
    ({"endpoint": "ipc:///x", "timeout_s": 0}, "timeout"),
    ({"endpoint": "ipc:///x", "retries": 0}, "try"),
])
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(EtherwsError, match=message):
        ControlClient(**kwargs)


def test_close_terminates_the_context(endpoint: str) -> None:
    c = ControlClient(endpoint)
    ctx = c._ctx
    assert ctx is not None
    with c:
        pass
    assert ctx.closed
    c.close()  # idempotent


def test_call_after_close_is_a_bug(serve: Any, endpoint: str) -> None:
    serve(answer({}))
    c = ControlClient(endpoint)
    c.close()
    with pytest.raises(RuntimeError):
        c.call("listPort", {})
