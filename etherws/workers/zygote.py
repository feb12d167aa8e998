"""The zygote: forks a peer worker for every accepted connection (I/O).

``python -m etherws.workers.zygote --rundir R --parent-pid P --link-fd N [log opts]``

A fresh interpreter that imports the peer worker costs some 0.25 s of CPU and 30 MB
(measured here), so 100 connections a second would need ten cores and a few hundred
idle ones gigabytes. This process imports ``etherws.workers.peer`` once, freezes the
objects it has (``gc.freeze``: the collector then never writes to those pages, so they
stay shared), holds no ZeroMQ context and no thread, and forks: a pending connection
costs the pages its worker writes to, and starts in milliseconds.

Every request on the link (``etherws.runtime.zygotelink``) is forked twice: the middle
process forks the worker and exits, so the worker is reparented to the supervisor (a
child subreaper, PR_SET_CHILD_SUBREAPER), which reaps it and reads its exit status as
for any process it spawned. The worker waits for that reparenting before it runs
``peer.main`` (whose first step ties it to the supervisor's life). Exit 0 when the
supervisor closes the link or on SIGTERM, ``procargs.EXIT_CONFIG`` when fd N is not
the link.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback

import setproctitle

from etherws.runtime import lifeline, logsetup, procargs, zygotelink
from etherws.runtime.signals import StopSignal
from etherws.workers import peer

log = logging.getLogger(__name__)

PEER_MODULE = "etherws.workers.peer"

REPARENT_TIMEOUT_S = 5.0
"""How long a new worker waits to become the supervisor's child (its middle process
exits at once; only a machine frozen this long makes it give up)."""


def _worker(argv: list[str], fd: int, link: socket.socket, supervisor: int) -> int:
    """In the forked worker: become a peer worker of connection ``fd``; its status."""
    link.close()
    os.setpgid(0, 0)  # its own process group, as the supervisor's spawns have
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    end = time.monotonic() + REPARENT_TIMEOUT_S
    while os.getppid() != supervisor:
        if time.monotonic() > end:
            return 1
        time.sleep(0.0005)
    os.set_inheritable(fd, False)
    argv = _with_fd(argv, fd)
    # What ps and the operator's tools would show for a peer spawned with fork+exec.
    setproctitle.setproctitle(" ".join([sys.executable, "-m", PEER_MODULE, *argv]))
    return peer.main(argv)


def _with_fd(argv: list[str], fd: int) -> list[str]:
    """``argv`` with the value of ``--fd`` replaced by ``fd`` (the number here)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--":
            break
        if arg == "--fd":
            out[i + 1] = str(fd)
            return out
    return ["--fd", str(fd), *out]


def _run_worker(argv: list[str], fd: int, link: socket.socket, supervisor: int) -> None:
    """The forked worker's whole life; never returns."""
    status = 1
    try:
        status = _worker(argv, fd, link, supervisor)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # a bug: print it as an uncaught exception would be
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def fork_worker(argv: list[str], fd: int, link: socket.socket, supervisor: int) -> int:
    """Fork a worker through a middle process; its pid once it is the supervisor's."""
    rd, wr = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(rd)
            pid = os.fork()
            if pid == 0:
                os.close(wr)
                _run_worker(argv, fd, link, supervisor)
            os.write(wr, pid.to_bytes(4, "little"))
        finally:
            os._exit(0)
    os.close(wr)
    try:
        data = os.read(rd, 4)
    finally:
        os.close(rd)
        os.waitpid(middle, 0)  # once it is reaped, the worker is the supervisor's child
    if len(data) != 4:
        raise OSError("the middle process could not fork the worker")
    return int.from_bytes(data, "little")


def serve(link: socket.socket, supervisor: int, stop: StopSignal) -> int:
    """Answer fork requests and beat until the supervisor goes or a stop comes."""
    poller = select.poll()
    poller.register(link.fileno(), select.POLLIN)
    malformed = 0
    zygotelink.send_reply(link, beat=True)
    next_beat = time.monotonic() + zygotelink.BEAT_S
    while not stop.requested:
        if poller.poll(max(0, int((next_beat - time.monotonic()) * 1000)) + 1):
            try:
                request = zygotelink.recv_request(link)
            except EOFError:
                return 0
            if request is None:
                malformed += 1
                log.warning("dropped a malformed fork request (%d so far)", malformed)
                continue
            argv, fd = request
            try:
                zygotelink.send_reply(link, pid=fork_worker(argv, fd, link, supervisor))
            except OSError as e:
                zygotelink.send_reply(link, error=f"cannot fork: {e.strerror or e}")
            finally:
                os.close(fd)
        if time.monotonic() >= next_beat:
            zygotelink.send_reply(link, beat=True)
            next_beat = time.monotonic() + zygotelink.BEAT_S
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the zygote; the exit status (see the module docstring)."""
    parser = procargs.child_parser("etherws-zygote", "etherws peer worker fork server")
    parser.add_argument("--link-fd", type=int, required=True,
                        help="the supervisor's link (zygotelink), inherited")
    args: argparse.Namespace = parser.parse_args(argv)
    lifeline.die_with_parent(args.parent_pid)
    stop = StopSignal(wake=False).install()
    logsetup.configure(args, "zygote")
    try:
        link = socket.socket(fileno=args.link_fd)
        ok = link.family == socket.AF_UNIX and link.type == socket.SOCK_SEQPACKET
    except OSError:
        ok = False
    if not ok:
        log.error("--link-fd %d is not the supervisor's link", args.link_fd)
        return procargs.EXIT_CONFIG
    link.set_inheritable(False)
    # Everything imported so far is shared with every worker; the collector must not
    # touch it (reference counts still do, page by page, where a worker uses an object).
    gc.freeze()
    try:
        return serve(link, args.parent_pid, stop)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the supervisor has gone


if __name__ == "__main__":
    sys.exit(main())
