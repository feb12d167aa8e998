"""The zygote process against this test as its supervisor; zygotelink's contract.

The test holds the supervisor's end of the link (``zygotelink.pair``) and starts the
zygote with the other end inherited. Where a forked worker must become the supervisor's
child, a small supervisor stand-in runs as its own process (a child subreaper, as the
real one is), so this test process never adopts anything. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from etherws.runtime import procargs, zygotelink
from tests import support

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 10 * support.SCALE


class Zygote:
    """A zygote process and the supervisor's end of its link."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "zygote.log"
        self.link, theirs = zygotelink.pair()
        self.link.settimeout(TIMEOUT_S)
        self.proc = subprocess.Popen(
            [support.PYTHON, "-m", "etherws.workers.zygote", "--rundir", str(tmp_path),
             "--parent-pid", str(os.getpid()), "--logfile", str(self.log),
             "--link-fd", str(theirs.fileno())], pass_fds=(theirs.fileno(),), cwd=ROOT)
        theirs.close()

    def message(self) -> dict[str, object]:
        """The next message from the zygote."""
        reply = zygotelink.decode_reply(self.link.recv(zygotelink.MAX_REPLY + 1))
        assert reply is not None
        return reply

    def close(self) -> None:
        """Close the link; the zygote must exit 0 on it."""
        self.link.close()
        try:
            assert self.proc.wait(timeout=TIMEOUT_S) == 0
        finally:
            support.kill_process(self.proc)


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    """A running zygote (its first beat received)."""
    z = Zygote(tmp_path)
    try:
        assert z.message() == {"v": 1, "beat": True}
        yield z
    finally:
        z.close()


def test_it_beats_while_idle(zygote: Zygote) -> None:
    assert zygote.message() == {"v": 1, "beat": True}  # the next, within BEAT_S
    assert zygote.proc.poll() is None


def _closed_by_zygote(far: socket.socket) -> bool:
    """True when the far end of a pair sent to the zygote sees EOF (every copy closed)."""
    far.settimeout(TIMEOUT_S)
    return far.recv(1) == b""


def test_malformed_requests_are_dropped_counted_and_their_descriptors_closed(
        zygote: Zygote) -> None:
    bad = [(b"not json", 1), (b'{"v":1,"argv":"--fd"}', 1), (b'{"v":2,"argv":[]}', 1),
           (b'{"v":1,"argv":[]}', 2), (b'{"v":1,"argv":[1,2]}', 1)]
    for payload, nfds in bad:
        pairs = [socket.socketpair() for _ in range(nfds)]
        socket.send_fds(zygote.link, [payload], [a.fileno() for a, _ in pairs])
        for a, b in pairs:
            a.close()  # ours: only the zygote's copy keeps it open now
            assert _closed_by_zygote(b)
            b.close()
    zygote.link.send(b'{"v":1,"argv":[]}')  # no descriptor at all
    support.wait_until(lambda: "dropped a malformed fork request (6 so far)"
                       in zygote.log.read_text(), TIMEOUT_S, "the drops to be logged")
    assert zygote.message() == {"v": 1, "beat": True}  # still serving
    assert zygote.proc.poll() is None


def test_a_link_that_is_not_one_is_a_configuration_error(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        proc = subprocess.run(
            [support.PYTHON, "-m", "etherws.workers.zygote", "--rundir", str(tmp_path),
             "--logfile", str(tmp_path / "log"), "--link-fd", str(r)], pass_fds=(r,),
            cwd=ROOT, timeout=TIMEOUT_S, check=False)
    finally:
        os.close(r)
        os.close(w)
    assert proc.returncode == procargs.EXIT_CONFIG
    assert f"--link-fd {r} is not the supervisor's link" in (tmp_path / "log").read_text()


def test_request_round_trip_and_limits() -> None:
    mine, theirs = zygotelink.pair()
    a, b = socket.socketpair()
    try:
        zygotelink.send_request(mine, ["--port", "3", "--", "192.0.2.7:1"], a.fileno())
        got = zygotelink.recv_request(theirs)
        assert got is not None and got[0] == ["--port", "3", "--", "192.0.2.7:1"]
        os.close(got[1])
        with pytest.raises(ValueError):
            zygotelink.send_request(mine, ["x" * zygotelink.MAX_REQUEST], a.fileno())
        mine.close()
        with pytest.raises(EOFError):
            zygotelink.recv_request(theirs)
    finally:
        for s in (theirs, a, b):
            s.close()


# A supervisor stand-in: a child subreaper that starts the zygote, asks it for a worker
# and reaps that worker itself, as supervisor/zygote.py does.
STAND_IN = textwrap.dedent("""
    import json, os, socket, subprocess, sys
    from etherws.runtime import lifeline, zygotelink
    from etherws.supervisor.children import Adopted
    lifeline.become_subreaper()
    rundir = sys.argv[1]
    mine, theirs = zygotelink.pair()
    mine.settimeout(10)
    z = subprocess.Popen([sys.executable, "-m", "etherws.workers.zygote", "--rundir", rundir,
                          "--parent-pid", str(os.getpid()), "--link-fd", str(theirs.fileno())],
                         pass_fds=(theirs.fileno(),))
    theirs.close()
    assert json.loads(mine.recv(512))["beat"]
    a, b = socket.socketpair()
    zygotelink.send_request(mine, ["--rundir", rundir, "--parent-pid", str(os.getpid()),
                                   "--port", "7", "--slot", "0", "--fd", "999", "--",
                                   "192.0.2.7:1"], a.fileno())
    a.close()
    while "beat" in (reply := json.loads(mine.recv(512))):
        pass
    worker = Adopted(reply["pid"])
    rc = worker.wait(timeout=10)
    mine.close()
    print(json.dumps({"pid": reply["pid"], "rc": rc, "zygote": z.wait(timeout=10),
                      "eof": b.recv(1) == b""}))
""")


def test_a_forked_worker_is_the_supervisors_child_and_reports_its_exit(
        tmp_path: Path) -> None:
    # No port table in this run directory: the peer worker starts (its argv, with the
    # descriptor number rewritten, parsed) and exits with its configuration error,
    # which the stand-in reaps as its own child's status.
    res = subprocess.run([support.PYTHON, "-c", STAND_IN, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=3 * TIMEOUT_S, check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["rc"] == procargs.EXIT_CONFIG, res.stderr
    assert out["zygote"] == 0  # the link closed: the zygote exits cleanly
    assert out["eof"]  # the worker closed the connection it was given, on its way out
