"""The harness of the Autobahn (RFC 6455) cases against real tunnel workers.

kosoku runs the Autobahn TestSuite's own case files (its Rust runner drives the
Python cases) in this test process, on an event loop of its own (``KosokuLoop``), so
the main thread stays free to accept connections and spawn workers and remains their
parent (PR_SET_PDEATHSIG follows the thread that forked). Around kosoku:

- ``EchoBroker``: this process as the broker. Every frame a port sends goes back to
  that port, so a worker behaves like the echo peer Autobahn expects, for binary
  messages; text never reaches the broker (the tunnel carries binary frames only).
- ``PeerServer``: the server side. A listening socket the test owns; every accepted
  connection gets a real peer worker with the socket as ``--fd`` (``pass_fds``), in a
  port table slot and port number of its own, as the supervisor does it.
- ``Door``: the client side's way to kosoku's server, one per case and client worker,
  so that the worker's reconnect after the case cannot run the case a second time.

Every wait has a deadline; every process is stopped by pid, every socket closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine, Iterable, Iterator, TypeVar

import kosoku
import kosoku.cases

from etherws.paths import RunDir
from etherws.runtime import rings
from etherws.tables import PortKind, PortTable
from etherws.workers import listener
from tests import support
from tests.component.fakes import ROOT

if TYPE_CHECKING:
    from kosoku._kosoku import CaseResult

T = TypeVar("T")
EXCLUDED = ("12.*", "13.*")
"""permessage-deflate: etherws never negotiates an extension (wsframe docstring)."""
AGENT = "etherws"


def matches(case_id: str, patterns: Iterable[str]) -> bool:
    """True when ``case_id`` matches one of the ids or ``*`` globs (kosoku's syntax)."""
    return any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


def selected_cases() -> list[str]:
    """The ids of every case kosoku runs here, in kosoku's order."""
    return [c for c in kosoku.cases.CASES if not matches(c, EXCLUDED)]


# --- the broker -------------------------------------------------------------------------
class EchoBroker:
    """This process as the broker, in a thread: every port's up ring is copied back into
    its down ring, so a worker behaves like the echo peer Autobahn expects.

    It serves the rings of every port in the table, as the broker does: it sleeps on the
    broker's doorbell with the rings armed and rings a worker's doorbell when it sleeps.
    A frame the down ring cannot take is dropped, as the real broker drops rather than
    block. ``close`` raises what went wrong in the thread.
    """

    POLL_MS = 20

    def __init__(self, rundir: str, table: PortTable) -> None:
        self.rd = RunDir(rundir)
        self.table = table
        self.frames = 0
        rings.make_bell(self.rd.broker_bell)
        self.bell = rings.Bell(self.rd.broker_bell)
        self.mapped: dict[tuple[int, int], tuple[rings.MappedRing, rings.Bell]] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="echo-broker", daemon=True)
        self._thread.start()

    def _sync(self) -> None:
        current = {(port, self.table.ring(slot)) for slot, port, _ in self.table.ports()}
        for key in set(self.mapped) - current:
            mapped, bell = self.mapped.pop(key)
            bell.close()
            mapped.close()
        for port, gen in current - set(self.mapped):
            path = self.rd.ring(port, gen)
            try:
                mapped = rings.MappedRing(path)
            except FileNotFoundError:  # its worker is gone already
                continue
            self.mapped[(port, gen)] = (mapped, rings.Bell(rings.bell_path(path)))

    def _echo(self) -> int:
        moved = 0
        for mapped, bell in self.mapped.values():
            up, down = mapped.file.up, mapped.file.down
            frames = up.take(256)
            moved += len(frames)
            for f in frames:
                down.put(f)
            del frames
            up.release()
            down.commit()
            rings.fence()
            if down.armed or up.waiting:
                bell.ring()
        self.frames += moved
        return moved

    def _serve(self) -> None:
        try:
            poller = select.poll()
            poller.register(self.bell.fileno(), select.POLLIN)
            while not self._stop.is_set():
                self._sync()
                if self._echo():
                    continue
                for mapped, _ in self.mapped.values():
                    mapped.file.up.arm(True)
                rings.fence()
                if not any(m.file.up.readable() for m, _ in self.mapped.values()):
                    poller.poll(self.POLL_MS)
                for mapped, _ in self.mapped.values():
                    mapped.file.up.arm(False)
                self.bell.drain()
        except BaseException as exc:  # surfaced by close(), so a broken fake fails the test
            self.error = exc

    def close(self) -> None:
        """Stop the thread, unmap every ring (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5 * support.SCALE)
        for mapped, bell in self.mapped.values():
            bell.close()
            mapped.close()
        self.mapped.clear()
        self.bell.close()
        if self.error is not None:
            raise self.error


# --- worker processes -----------------------------------------------------------------------
class WorkerProc(subprocess.Popen[bytes]):
    """A port worker in ``slot`` as ``port``, its stderr to ``log``.

    stdin is empty: a client worker reads its secrets there, and there are none.
    """

    def __init__(self, argv: list[str], log: Path, slot: int, port: int,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.log, self.slot, self.port = log, slot, port
        self.stopped = False  # by the test, with SIGTERM
        with open(log, "w") as err:
            super().__init__(argv, cwd=ROOT, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)


class Workers:
    """Port workers of one kind, each in a port table slot and port number of its own.

    Slots are taken round-robin, as the supervisor takes them, and released when
    their worker has exited. A worker that exits with a status other than 0 has
    crashed: ``crashes`` keeps its log for the test to show.
    """

    def __init__(self, rundir: str, logdir: Path, table: PortTable, kind: PortKind) -> None:
        self.rundir, self.logdir, self.table, self.kind = rundir, logdir, table, kind
        self.module = {PortKind.SERVER: "etherws.workers.peer",
                       PortKind.CLIENT: "etherws.workers.client"}[kind]
        self.running: list[WorkerProc] = []
        self.crashes: list[str] = []
        self.started = 0

    def spawn(self, target: str, options: list[str],
              pass_fds: tuple[int, ...] = ()) -> WorkerProc:
        """Claim a slot and a new port number; start a worker on ``target``."""
        slot = self.table.free_slot(self.started)
        assert slot is not None, "port table full: workers are not exiting"
        self.started += 1
        port = self.started
        ring = RunDir(self.rundir).ring(port, port)
        rings.create_ring(ring, port, port)
        self.table.claim(slot, port, self.kind, ring=port)
        argv = [sys.executable, "-m", self.module, "--rundir", self.rundir,
                "--parent-pid", str(os.getpid()), "--port", str(port), "--slot", str(slot),
                *options, target]
        try:
            proc = WorkerProc(argv, self.logdir / f"{self.kind.name.lower()}-{port}.log",
                              slot, port, pass_fds)
        except BaseException:
            self.table.release(slot)
            rings.remove_ring(ring)
            raise
        self.running.append(proc)
        return proc

    def reap(self) -> None:
        """Release the slots of the workers that have exited; note the crashes."""
        for proc in [p for p in self.running if p.poll() is not None]:
            self._gone(proc)

    def stop(self, proc: WorkerProc) -> None:
        """SIGTERM (then SIGKILL) one worker and release its slot."""
        proc.stopped = proc.poll() is None
        support.kill_process(proc)
        self._gone(proc)

    def wait_all(self, timeout_s: float) -> None:
        """Until every worker has exited on its own."""
        def gone() -> bool:
            self.reap()
            return not self.running
        support.wait_until(gone, timeout_s, f"{len(self.running)} workers to exit")

    def stop_all(self) -> None:
        """Stop every worker still running (teardown, also after a failure)."""
        for proc in list(self.running):
            self.stop(proc)

    def _gone(self, proc: WorkerProc) -> None:
        self.running.remove(proc)
        self.table.release(proc.slot)
        rings.remove_ring(RunDir(self.rundir).ring(proc.port, proc.port))
        # A SIGTERM that lands while the interpreter exits anyway ends it by the signal.
        if proc.returncode != 0 and not (proc.stopped and proc.returncode == -signal.SIGTERM):
            self.crashes.append(f"port {proc.port} exited with {proc.returncode}:\n"
                                f"{proc.log.read_text()}")


# --- the server side ----------------------------------------------------------------------
class PeerServer:
    """A listening socket on loopback; each accepted connection gets a peer worker."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.lsock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.lsock.setblocking(False)
        self.url = "ws://127.0.0.1:%d" % self.lsock.getsockname()[1]

    def serve_until(self, done: Future[Any], timeout_s: float) -> None:
        """Accept and spawn until ``done`` is done; fail at the (scaled) deadline."""
        end = support.deadline(timeout_s)
        while not done.done():
            assert time.monotonic() < end, f"kosoku still running after {timeout_s} s"
            if select.select([self.lsock], [], [], 0.05)[0]:
                self._accept()
            self.workers.reap()

    def _accept(self) -> None:
        """Take every connection waiting; the worker gets the socket, we close ours."""
        while True:
            try:
                conn, (host, port) = self.lsock.accept()
            except BlockingIOError:
                return
            with conn:
                listener.tune(conn)  # TCP options, as the real listener sets them
                self.workers.spawn(f"{host}:{port}", ["--fd", str(conn.fileno())],
                                   pass_fds=(conn.fileno(),))

    def close(self) -> None:
        """Stop accepting."""
        self.lsock.close()


# --- the client side ----------------------------------------------------------------------
class Door:
    """A one-shot TCP relay to kosoku's server, for one case's client worker.

    The worker's URL points here. The first connection is relayed byte for byte to
    ``upstream``; an end of stream is passed on as one (shutdown), a reset as a reset.
    Nothing else is accepted: the worker reconnects at once when its connection ends
    (etherws.backoff: the first retry is immediate), and that connection waits in this
    socket's backlog instead of running the case again. The socket listens until
    ``close``, so its port cannot go to another case's door meanwhile. When the
    relayed connection has ended (or failed: ``error``) the door puts itself on
    ``finished``. Checked when this was written: all 301 verdicts through doors were
    those of direct connections (where most cases then ran twice).
    """

    def __init__(self, upstream: tuple[str, int], case: int, finished: queue.Queue[Door],
                 timeout_s: float) -> None:
        self.upstream, self.case, self.finished = upstream, case, finished
        self.end = support.deadline(timeout_s)
        self.lsock = socket.create_server(("127.0.0.1", 0), backlog=1)
        self.url = (f"ws://127.0.0.1:{self.lsock.getsockname()[1]}"
                    f"/runCase?case={case}&agent={AGENT}")
        self.reset = False  # one side reset the connection: reset the other one too
        self.error: BaseException | None = None
        self._closing = threading.Event()
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name=f"door-{case}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not select.select([self.lsock], [], [], 0.1)[0]:
                if self._closing.is_set():
                    return
                if time.monotonic() > self.end:
                    raise TimeoutError("the client worker never connected")
            worker, _ = self.lsock.accept()
            self._socks.append(worker)
            kosoku_end = socket.create_connection(self.upstream, timeout=10 * support.SCALE)
            self._socks.append(kosoku_end)
            for s in self._socks:
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # One thread per direction: a side that stops reading must not stop the other.
            back = threading.Thread(target=self._pump, args=(kosoku_end, worker), daemon=True)
            back.start()
            self._pump(worker, kosoku_end)
            back.join(max(0.0, self.end - time.monotonic()))
            if back.is_alive():
                raise TimeoutError("the case's connection did not end in time")
        except BaseException as exc:  # the main thread reports it
            self.error = exc
        finally:
            for s in self._socks:
                if self.reset or self.error is not None:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                s.close()
            self.finished.put(self)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst`` until ``src`` ends (passed on) or a side resets."""
        while True:
            try:
                data = src.recv(262144)
            except OSError:
                # src was reset: the other direction (reading dst) must end too, and
                # the close passes the reset on. SHUT_RD only wakes that recv(): Linux
                # sends nothing for it.
                self.reset = True
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_RD)
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                # dst was reset: the other direction still delivers what dst sent before
                # the reset (a Close frame, say), then ends on the reset itself.
                self.reset = True
                return

    def close(self) -> None:
        """End the relay if it still runs, stop listening, join the thread."""
        self._closing.set()
        for s in list(self._socks):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the pumps
        self._thread.join(timeout=5 * support.SCALE)
        self.lsock.close()


_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
"""SO_LINGER on, zero seconds: close() sends a reset."""


# --- kosoku ---------------------------------------------------------------------------------
class KosokuLoop:
    """An asyncio event loop in a thread of its own, for kosoku's coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kosoku",
                                        daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run ``coro`` on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def fuzzing_client(self, url: str, cases: list[str] | None,
                       parallel: int) -> Future[list[CaseResult]]:
        """kosoku connecting to ``url`` for ``cases`` (None: all), ``parallel`` at a time."""
        return self.submit(_results(kosoku.run_fuzzingclient(url, cases, list(EXCLUDED),
                                                             concurrency=parallel)))

    @contextlib.contextmanager
    def fuzzing_server(self, cases: list[str] | None
                       ) -> Iterator[tuple[int, Future[list[CaseResult]]]]:
        """kosoku serving ``cases`` (None: all) on loopback: its port, the future results."""
        timeout_s = 10 * support.SCALE
        server = self.submit(_enter(kosoku.run_fuzzingserver(
            cases, list(EXCLUDED), host="127.0.0.1", port=0))).result(timeout_s)
        try:
            yield server.port, self.submit(_results(server.get_result()))
        finally:
            self.submit(server.__aexit__(None, None, None)).result(timeout_s)

    def close(self) -> None:
        """Cancel what still runs, stop the loop, join the thread."""
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.submit(cancel_all()).result(10 * support.SCALE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10 * support.SCALE)
        self.loop.close()


async def _enter(server: kosoku.FuzzingServer) -> kosoku.FuzzingServer:
    return await server.__aenter__()


async def _results(run: Any) -> list[CaseResult]:
    """The results of a run, failed cases included: the allow-list judges them."""
    try:
        return list(await run)
    except kosoku.FailureError as failure:
        return failure.results
