"""logrotate against a running switch: the log file renamed under a stream of audited
control requests, then SIGHUP to the supervisor (postrotate). Every request's line is
in one of the two files, whole; no process dies of the SIGHUP."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

from etherws.control import RpcError
from etherws.paths import RunDir
from etherws.runtime.ctlclient import ControlClient
from tests.support import SCALE, unique, wait_until
from tests.system.harness import Switch

REQUESTS_MAX = 100_000
AUDIT = re.compile(r"control \(local\): addPort type='seq(\d+)' target='x'$")


def audited(path: Path) -> list[int]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = AUDIT.search(line)
        if m:
            assert re.match(r"\d{4}-\d\d-\d\d ", line), f"split: {line!r}"
            out.append(int(m.group(1)))
    return out


def test_rename_and_sighup_under_traffic(tmp_path: Path, rundir: str) -> None:
    log = tmp_path / "etherws.log"
    sw = Switch(rundir, tmp_path / "stdout.log", ["--logfile", str(log)])
    try:
        tap = unique("etwt")
        port = sw.add("tap", tap)
        before = {e["port"]: e["pid"] for e in sw.entries("listport")}
        broker = sw.status()["broker"]["pid"]
        done = threading.Event()
        sent: list[int] = []

        def traffic() -> None:
            with ControlClient(RunDir(rundir).ctl_endpoint, timeout_s=5 * SCALE) as c:
                i = 0
                while not done.is_set() and i < REQUESTS_MAX:
                    try:  # audited, then refused: a numbered line per request
                        c.call("addPort", {"type": f"seq{i}", "target": "x"})
                    except RpcError:
                        pass
                    i += 1
                    sent.append(i)
        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            wait_until(lambda: len(audited(log)) > 100, 20, "traffic")
            os.rename(log, tmp_path / "etherws.log.1")  # logrotate's rename
            wait_until(lambda: audited(log), 10, "lines in the new file")
            sw.proc.send_signal(signal.SIGHUP)  # postrotate
            wait_until(lambda: len(audited(log)) > 200, 20, "lines after the SIGHUP")
        finally:
            done.set()
            worker.join(timeout=60 * SCALE)
        old, new = audited(tmp_path / "etherws.log.1"), audited(log)
        assert sorted(old + new) == list(range(len(sent)))
        assert old and new and old[-1] < new[0]
        # nothing died of the SIGHUP passed on to the children
        assert {e["port"]: e["pid"] for e in sw.entries("listport")} == before
        assert sw.port(port)["restarts"] == 0
        status = sw.status()
        assert status["broker"]["pid"] == broker and status["broker"]["restarts"] == 0
    finally:
        sw.close()
