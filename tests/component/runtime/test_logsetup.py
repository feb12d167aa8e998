"""Log files and rotation, in a real process writing a steady stream of numbered lines:
a rename is followed (WatchedFileHandler), SIGHUP reopens any file handler (also a
--logconf FileHandler, which does not watch), and no line is lost, doubled or split."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import support

REPO = str(Path(__file__).resolve().parents[3])
LINES = 3000
WRITER = """
import argparse, logging, sys, time
from etherws.runtime import logsetup
args = argparse.Namespace(logfile=sys.argv[1] or None, logconf=sys.argv[2] or None)
logsetup.configure(args, "writer")
log = logging.getLogger("w")
for i in range(int(sys.argv[3])):
    log.info("line %06d %s", i, "x" * 200)
    if i == 100:
        print("going", flush=True)
    time.sleep(0.001)
"""
LOGCONF = """[loggers]
keys=root
[handlers]
keys=file
[formatters]
keys=plain
[logger_root]
level=INFO
handlers=file
[handler_file]
class=FileHandler
args=({path!r}, "a")
formatter=plain
[formatter_plain]
format=%(asctime)s %(levelname)s %(message)s
"""
LINE = re.compile(r"^\S+ \S+ .*INFO line (\d{6}) x{200}$")


def numbers(*paths: Path) -> list[int]:
    """The line numbers in ``paths``; fails on any line that is not whole."""
    found = []
    for path in paths:
        for line in path.read_text().splitlines():
            m = LINE.match(line)
            assert m, f"a split or foreign line in {path.name}: {line!r}"
            found.append(int(m.group(1)))
    return found


@pytest.mark.parametrize("kind", ["logfile", "logconf"])
def test_rename_then_sighup_loses_and_splits_nothing(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "etherws.log"
    conf = tmp_path / "log.conf"
    conf.write_text(LOGCONF.format(path=str(log)))
    argv = [sys.executable, "-c", WRITER, str(log) if kind == "logfile" else "",
            str(conf) if kind == "logconf" else "", str(LINES)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "going\n"
        os.rename(log, tmp_path / "etherws.log.1")  # logrotate's rename, under traffic
        support.wait_until(lambda: len(numbers(tmp_path / "etherws.log.1")) > 300
                           or log.exists(), 10, "more lines")
        proc.send_signal(signal.SIGHUP)  # postrotate
        assert proc.wait(timeout=60 * support.SCALE) == 0  # SIGHUP did not end it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    old, new = numbers(tmp_path / "etherws.log.1"), numbers(log)
    assert sorted(old + new) == list(range(LINES))  # none lost, none twice
    assert old == sorted(old) and new == sorted(new) and old[-1] < new[0]
    assert new, "nothing reached the new file"
