"""The supervisor's side of the zygote, which forks peer workers (I/O).

The zygote (``workers/zygote.py``) is supervised like the listener: restarted at once
and never FATAL, watched through the beats it sends on its link. While it is up, every
new peer worker is forked there (milliseconds, a few MB); while it is not, a peer
worker is spawned as before, with fork+exec, so a dead zygote slows the server down
but never stops it. A zygote that does not answer a request (in time, or at all: it
died with the request) is killed: the connection is refused with a 503 the client
retries (the zygote may have forked its worker already, and a second worker on one
connection would be worse) and a new zygote takes the next one.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time

from etherws.runtime import lifeline, zygotelink
from etherws.supervisor.children import Adopted, Child, Process
from etherws.supervisor.policy import RestartPolicy, State

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 2.0
"""A fork takes milliseconds; a zygote silent this long is stopped or hung."""
PEER_MODULE = "etherws.workers.peer"


class ZygoteChild(Child):
    """The zygote's Child: every start gets a new link (a request the previous zygote
    never answered dies with that link, descriptor included)."""

    def __init__(self, argv: list[str]) -> None:
        # Never FATAL and back within a second: without it, peers start slowly.
        super().__init__(argv, RestartPolicy(max_crashes=None, max_delay_s=1.0))
        self.base_argv = argv
        self.link: socket.socket | None = None
        self.beat_ns = 0
        """time.monotonic_ns() of its last beat or reply (0: none yet)."""
        self.forked = 0
        """Peer workers it forked (all its lives)."""
        self.spawned = 0
        """Peer workers started with fork+exec instead, while it was not up."""

    def spawn(self, now: float, restart: bool = False) -> None:
        """Start the zygote with a fresh link."""
        self.close_link()
        mine, theirs = zygotelink.pair()
        try:
            self.argv = self.restart_argv = self.base_argv + ["--link-fd",
                                                              str(theirs.fileno())]
            self.pass_fds = (theirs.fileno(),)
            super().spawn(now, restart)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.link = mine
        self.link.setblocking(False)

    def close_link(self) -> None:
        """Forget the current link (the zygote sees EOF and exits)."""
        if self.link is not None:
            self.link.close()
            self.link = None


class Zygote:
    """Starts the zygote, reads its beats, asks it for workers."""

    def __init__(self, argv: list[str]) -> None:
        self.child = ZygoteChild(argv)

    def start(self, now: float) -> bool:
        """Become a child subreaper and start the zygote; False (logged) when the
        kernel refuses: then every peer worker is spawned with fork+exec."""
        try:
            lifeline.become_subreaper()
        except OSError as exc:
            log.warning("no zygote (peer workers start slower): %s", exc)
            return False
        self.child.spawn(now)
        return True

    def fds(self) -> list[int]:
        """The link, to poll for beats."""
        return [] if self.child.link is None else [self.child.link.fileno()]

    def ready(self, fd: int, now_ns: int) -> bool:
        """Read the beats waiting on ``fd``; False when ``fd`` is not the link."""
        link = self.child.link
        if link is None or fd != link.fileno():
            return False
        for _ in range(64):
            try:
                data = link.recv(zygotelink.MAX_REPLY + 1)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:  # the zygote has gone; poll() will tell why
                self.child.close_link()
                break
            if zygotelink.decode_reply(data) is not None:
                self.child.beat_ns = now_ns
        return True

    def launcher(self, argv: list[str], pass_fds: tuple[int, ...]) -> Process | None:
        """``children.Launcher`` for peer workers: the worker forked by the zygote, or
        None (spawn it as usual) when the zygote is not up. OSError when the zygote took
        the request and did not answer it."""
        link = self.child.link
        if link is None or self.child.life.state is not State.UP \
                or self.child.popen is None or len(pass_fds) != 1 \
                or argv[1:3] != ["-m", PEER_MODULE]:
            self.child.spawned += 1
            return None
        try:
            zygotelink.send_request(link, argv[3:], pass_fds[0])
        except (OSError, ValueError) as exc:  # full, or gone: nothing was taken
            log.warning("zygote: cannot send a request: %s", exc)
            self.child.spawned += 1
            return None
        reply = self._reply(link)
        if isinstance(reply, str):
            # It may have forked a worker before it went: a second one for the same
            # connection would be worse than a refusal the client retries.
            self.child.kill_reason = reply
            log.warning("zygote: %s; a peer is refused, the zygote restarted", reply)
            self.child.kill()
            self.child.close_link()
            raise OSError(f"the zygote {reply}")
        pid = reply.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            raise OSError(f"the zygote could not fork: {reply.get('error', reply)}")
        self.child.forked += 1
        return Adopted(pid)

    def _reply(self, link: socket.socket) -> dict[str, object] | str:
        """The answer to the request just sent, skipping beats; or why there is none."""
        end = time.monotonic() + REPLY_TIMEOUT_S
        poller = select.poll()
        poller.register(link.fileno(), select.POLLIN)
        while (left := end - time.monotonic()) > 0:
            if not poller.poll(int(left * 1000) + 1):
                continue
            try:
                data = link.recv(zygotelink.MAX_REPLY + 1)
            except BlockingIOError:
                continue
            except OSError as exc:
                return f"broke its link ({exc.strerror or exc}) with a request"
            if not data:
                return "went away with a request"
            reply = zygotelink.decode_reply(data)
            if reply is None:
                return "sent a malformed reply"
            self.child.beat_ns = time.monotonic_ns()
            if "beat" not in reply:
                return reply
        return f"did not answer a fork request in {REPLY_TIMEOUT_S:g}s"

    def close(self) -> None:
        """Close the link (the zygote, if still running, exits on EOF)."""
        with contextlib.suppress(OSError):
            self.child.close_link()
