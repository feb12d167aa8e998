"""The Autobahn TestSuite's RFC 6455 cases against the real peer and client workers.

kosoku (the Autobahn cases on Python 3) runs every case but 12.* and 13.*
(permessage-deflate, never negotiated): as the client against peer workers
(``test_server_side``), and as the server for client workers (``test_client_side``).
Behind the workers this process is the broker and echoes every frame (``autobahn``).
A case that fails must be excused, with its reason, by the checked-in allow-list
(tests/fixtures/autobahn-allowlist.toml), and an entry that excuses a passing case, or
none, fails the test too, so the list stays honest. A failure the list does not excuse
gets one more run with nothing else running (``run_and_judge``: Autobahn's timers are
short). kosoku's reports (HTML and JSON per case) are written under the test's tmp_path.
"""

from __future__ import annotations

import queue
import time
import tomllib
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import kosoku.cases
import pytest
import websocket
from kosoku._report import write_reports

from etherws.paths import RunDir
from etherws.runtime.shm import create_port_table
from etherws.tables import DEFAULT_PORT_SLOTS, PortKind, PortTable
from tests import support
from tests.component.autobahn import (
    AGENT,
    Door,
    EchoBroker,
    KosokuLoop,
    PeerServer,
    WorkerProc,
    Workers,
    matches,
    selected_cases,
)
from tests.component.fakes import ROOT

if TYPE_CHECKING:
    from kosoku._kosoku import CaseResult

ALLOWLIST = ROOT / "tests" / "fixtures" / "autobahn-allowlist.toml"
SIDES = ("server", "client")
PASS = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
"""Verdicts Autobahn counts as a pass (kosoku's ``CaseResult.passed``)."""
SERVER_PARALLEL = 16
"""Cases kosoku runs at once against peer workers (one worker process each)."""
CLIENT_PARALLEL = 8
"""Client workers (one per case) running at once; spawning them is the cost."""
CASE_TIMEOUT_S = 60
"""Longest a client-side case may take; the slowest (1.1.6) is killed by kosoku at 10 s."""
RUN_TIMEOUT_S = 150
"""Longest a side may take (about 30 s here, on two cores)."""
NEVER_ECHOED = ("9.7.*", "9.8.1")
"""Cases that wait for the echo of their first message for 60 to 480 s (``WAITSECS``):
9.7.x send text (ignored by design), 9.8.1 empty binary messages (shorter than an
Ethernet header: dropped). Nothing ever comes back, whatever the wait, so they wait
NO_ECHO_WAIT_S instead (``short_waits``) and still run against the worker. The
allow-list must excuse them, with the reason."""
NO_ECHO_WAIT_S = 3


# --- the allow-list -------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What a case came to: kosoku's verdicts and the close code etherws sent (None: none)."""

    case_id: str
    behavior: str
    behavior_close: str
    etherws_close: int | None

    @property
    def passed(self) -> bool:
        """OK, NON-STRICT or INFORMATIONAL, both for the messages and the closing."""
        return self.behavior in PASS and self.behavior_close in PASS

    @classmethod
    def of(cls, result: CaseResult) -> Outcome:
        """From a kosoku result."""
        return cls(result.case_id, result.behavior.value, result.behavior_close.value,
                   result.remote_close_code)


@dataclass(frozen=True)
class Allowance:
    """One entry: cases that may fail, the reason, how etherws may have closed."""

    reason: str
    cases: tuple[str, ...]
    etherws_close: frozenset[int | None]
    sides: frozenset[str]


def load_allowlist(path: Path) -> list[Allowance]:
    """The entries of the allow-list file; a malformed entry fails the test."""
    entries = []
    for i, raw in enumerate(tomllib.loads(path.read_text())["allow"]):
        where = f"{path.name} entry {i + 1}"
        unknown = set(raw) - {"reason", "cases", "etherws_close", "sides"}
        assert not unknown, f"{where}: unknown keys {sorted(unknown)}"
        assert isinstance(raw.get("reason"), str) and raw["reason"].strip(), \
            f"{where}: no reason"
        assert raw.get("cases") and all(isinstance(c, str) for c in raw["cases"]), \
            f"{where}: cases must be a list of ids or globs"
        codes = raw.get("etherws_close")
        assert codes and all(c == "none" or isinstance(c, int) for c in codes), \
            f"{where}: etherws_close must list close codes or \"none\""
        sides = raw.get("sides", list(SIDES))
        assert set(sides) <= set(SIDES), f"{where}: sides are {SIDES}"
        entries.append(Allowance(" ".join(raw["reason"].split()), tuple(raw["cases"]),
                                 frozenset(None if c == "none" else c for c in codes),
                                 frozenset(sides)))
    return entries


def unexcused(o: Outcome, allowlist: list[Allowance], side: str) -> str | None:
    """Why a case's outcome is not as allowed, or None: a failure needs exactly one
    entry, and one of that entry's close codes."""
    if o.passed:
        return None
    found = [a for a in allowlist if side in a.sides and matches(o.case_id, a.cases)]
    what = (f"{o.case_id}: {o.behavior} / close {o.behavior_close}, etherws closed "
            f"with {o.etherws_close or 'nothing'}")
    if not found:
        return f"{what}: not in the allow-list"
    if len(found) > 1:
        return f"{what}: in {len(found)} allow-list entries"
    if o.etherws_close not in found[0].etherws_close:
        codes = " or ".join(sorted(str(c or "nothing") for c in found[0].etherws_close))
        return (f"{what}: the allow-list excuses it ({found[0].reason!r}) only when "
                f"etherws closed with {codes}")
    return None


def judge(outcomes: list[Outcome], allowlist: list[Allowance], side: str) -> list[str]:
    """Every problem with a run, one line each; [] when the run is as allowed.

    Each failed case must be excused (``unexcused``); each pattern of an entry must
    match a case, and only failed ones.
    """
    problems = [p for p in (unexcused(o, allowlist, side) for o in outcomes) if p]
    for a in allowlist:
        if side not in a.sides:
            continue
        for pattern in a.cases:
            hits = [o for o in outcomes if matches(o.case_id, (pattern,))]
            passing = [o.case_id for o in hits if o.passed]
            if not hits:
                problems.append(f"allow-list {pattern!r}: no such case (stale entry)")
            elif passing:
                problems.append(f"allow-list {pattern!r}: {', '.join(passing)} pass now "
                                "(stale entry: remove or narrow it)")
    return problems


def ran_once(results: list[CaseResult], cases: list[str]) -> dict[str, Outcome]:
    """The outcome of each case; fails unless every one of ``cases`` ran, once."""
    ran, wanted = Counter(r.case_id for r in results), set(cases)
    assert set(ran) == wanted, (f"cases not run: {sorted(wanted - set(ran))}, "
                                f"not expected: {sorted(set(ran) - wanted)}")
    assert max(ran.values()) == 1, f"cases run twice: {[c for c, n in ran.items() if n > 1]}"
    outcomes = {r.case_id: Outcome.of(r) for r in results}
    assert all(outcomes[r.case_id].passed == r.passed for r in results)  # kosoku agrees
    return outcomes


Run = Callable[[list[str] | None, int], list["CaseResult"]]
"""Runs cases (None: all) against one side, so many at a time; their results."""


def run_and_judge(side: str, run: Run, parallel: int, reports: Path) -> None:
    """Every case ``parallel`` at a time, then each unexcused failure once more, alone.

    Autobahn times many cases with 0.5 to 1 s timers: on a loaded machine a worker that
    answers late fails a case it passes alone. A protocol fault fails alone too; a case
    that passes only alone is reported as a warning. kosoku's reports go to
    ``reports``/all and ``reports``/again.
    """
    allowlist = load_allowlist(ALLOWLIST)
    results = run(None, parallel)
    write_reports(results, str(reports / "all"))
    outcomes = ran_once(results, selected_cases())
    again = [c for c, o in outcomes.items() if unexcused(o, allowlist, side)]
    if again:
        rerun = run(again, 1)
        write_reports(rerun, str(reports / "again"))
        outcomes.update(ran_once(rerun, again))
        if late := [c for c in again if not unexcused(outcomes[c], allowlist, side)]:
            warnings.warn(f"Autobahn {side} side: {', '.join(late)} failed among "
                          f"{parallel} cases at once and passed alone (load?)")
    problems = judge(list(outcomes.values()), allowlist, side)
    assert not problems, "\n".join([f"{side} side, kosoku's reports in {reports}:", *problems])


@contextmanager
def short_waits() -> Iterator[list[str]]:
    """Shorten the wait of the NEVER_ECHOED cases; the ids. Restored afterwards."""
    saved = {c: cls.WAITSECS for c, cls in kosoku.cases.CASES.items()
             if matches(c, NEVER_ECHOED) and "WAITSECS" in vars(cls)}
    assert sorted(saved) == sorted(c for c in kosoku.cases.CASES if matches(c, NEVER_ECHOED))
    try:
        for c in saved:
            kosoku.cases.CASES[c].WAITSECS = NO_ECHO_WAIT_S
        yield sorted(saved)
    finally:
        for c, waitsecs in saved.items():
            kosoku.cases.CASES[c].WAITSECS = waitsecs


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def kosoku_loop() -> Iterator[KosokuLoop]:
    """kosoku's event loop, with the never-echoed cases waiting NO_ECHO_WAIT_S."""
    with short_waits() as shortened:
        # A case that cannot pass with its wait shortened must be excused, with the reason.
        allowed = load_allowlist(ALLOWLIST)
        assert all(any(matches(c, a.cases) for a in allowed) for c in shortened)
        loop = KosokuLoop()
        try:
            yield loop
        finally:
            loop.close()


@pytest.fixture
def ports(rundir: str) -> PortTable:
    """The port table, as large as the supervisor makes it: room for a slot per case."""
    return create_port_table(RunDir(rundir).port_table, DEFAULT_PORT_SLOTS)


@pytest.fixture
def echo(rundir: str, ports: PortTable) -> Iterator[EchoBroker]:
    """This process as the broker, echoing."""
    broker = EchoBroker(rundir, ports)
    try:
        yield broker
    finally:
        broker.close()


def workers_of(kind: PortKind, rundir: str, tmp_path: Path, ports: PortTable) -> Workers:
    """Workers of ``kind`` logging to tmp_path/logs."""
    logdir = tmp_path / "logs"
    logdir.mkdir(exist_ok=True)
    return Workers(rundir, logdir, ports, kind)


# --- the cases --------------------------------------------------------------------------------
@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 30)
def test_server_side(rundir: str, tmp_path: Path, ports: PortTable, echo: EchoBroker,
                     kosoku_loop: KosokuLoop) -> None:
    workers = workers_of(PortKind.SERVER, rundir, tmp_path, ports)

    def run(cases: list[str] | None, parallel: int) -> list[CaseResult]:
        server, before = PeerServer(workers), workers.started
        try:
            done = kosoku_loop.fuzzing_client(server.url, cases, parallel)
            server.serve_until(done, RUN_TIMEOUT_S)
            workers.wait_all(5)  # peers end with their connection: none is left to stop
        finally:
            server.close()
            workers.stop_all()
        assert not workers.crashes, "\n".join(workers.crashes)
        results = done.result()
        assert workers.started - before == len(results), "a connection and worker per case"
        return results

    run_and_judge("server", run, SERVER_PARALLEL, tmp_path / "reports")
    assert echo.frames > 0


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 30)
def test_client_side(rundir: str, tmp_path: Path, ports: PortTable, echo: EchoBroker,
                     kosoku_loop: KosokuLoop) -> None:
    workers = workers_of(PortKind.CLIENT, rundir, tmp_path, ports)

    def run(cases: list[str] | None, parallel: int) -> list[CaseResult]:
        with kosoku_loop.fuzzing_server(cases) as (port, done):
            base = f"ws://127.0.0.1:{port}"
            count = int(fetch(f"{base}/getCaseCount"))
            assert count == len(cases or selected_cases())
            run_clients(workers, ("127.0.0.1", port), count, parallel)
            fetch(f"{base}/updateReports?agent={AGENT}")
            assert not workers.crashes, "\n".join(workers.crashes)
            return done.result(timeout=30 * support.SCALE)

    run_and_judge("client", run, CLIENT_PARALLEL, tmp_path / "reports")
    assert echo.frames > 0


def fetch(url: str) -> str:
    """Open a WebSocket to kosoku's server, read its message if it sends one, close."""
    ws = websocket.create_connection(url, timeout=10 * support.SCALE)
    try:
        opcode, data = ws.recv_data()
        return data.decode() if opcode == websocket.ABNF.OPCODE_TEXT else ""
    except websocket.WebSocketConnectionClosedException:
        return ""
    finally:
        ws.close()


def run_clients(workers: Workers, kosoku_at: tuple[str, int], count: int,
                parallel: int) -> None:
    """Cases 1..count, each by a client worker of its own through a ``Door``.

    A worker is stopped as soon as its case's connection has ended: by then kosoku has
    the result, and the worker's reconnect waits at the door.
    """
    pending = list(range(count, 0, -1))
    running: dict[Door, WorkerProc] = {}
    finished: queue.Queue[Door] = queue.Queue()
    end = support.deadline(RUN_TIMEOUT_S)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                door = Door(kosoku_at, pending.pop(), finished, CASE_TIMEOUT_S)
                running[door] = workers.spawn(door.url, [])
            try:
                door = finished.get(timeout=0.1)
            except queue.Empty:
                assert time.monotonic() < end, "the client cases took too long"
                for waiting, proc in running.items():
                    assert proc.poll() is None, \
                        f"case {waiting.case}: the worker exited:\n{proc.log.read_text()}"
                continue
            workers.stop(running.pop(door))
            door.close()
            assert door.error is None, f"case {door.case}: {door.error!r}"
    finally:
        for door, proc in running.items():
            workers.stop(proc)
            door.close()


# --- the judge itself -----------------------------------------------------------------------
def test_the_allowlist_is_judged_strictly() -> None:
    allow = [Allowance("text is ignored", ("1.1.*", "9.9.9"), frozenset({None, 1000}),
                       frozenset(SIDES)),
             Allowance("too big", ("1.2.8",), frozenset({1009}), frozenset({"client"}))]
    outcomes = [Outcome("1.1.1", "FAILED", "OK", 1000),
                Outcome("1.1.2", "OK", "OK", 1000),
                Outcome("1.2.8", "FAILED", "FAILED", 1002),
                Outcome("2.1", "NON-STRICT", "INFORMATIONAL", 1000),
                Outcome("2.2", "UNIMPLEMENTED", "OK", None)]
    assert judge(outcomes, allow, "server") == [
        "1.2.8: FAILED / close FAILED, etherws closed with 1002: not in the allow-list",
        "2.2: UNIMPLEMENTED / close OK, etherws closed with nothing: not in the allow-list",
        "allow-list '1.1.*': 1.1.2 pass now (stale entry: remove or narrow it)",
        "allow-list '9.9.9': no such case (stale entry)",
    ]
    assert judge(outcomes, allow, "client")[0] == (
        "1.2.8: FAILED / close FAILED, etherws closed with 1002: the allow-list excuses it "
        "('too big') only when etherws closed with 1009")


def test_every_allowlist_pattern_names_a_case_that_runs() -> None:
    cases = selected_cases()
    for entry in load_allowlist(ALLOWLIST):
        for pattern in entry.cases:
            assert any(matches(c, (pattern,)) for c in cases), pattern
