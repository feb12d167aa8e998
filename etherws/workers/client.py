"""The client tunnel port worker: an outgoing WebSocket <-> the broker (I/O).

``python -m etherws.workers.client --rundir R --parent-pid P --port N --slot S
[--cacerts F] [--insecure] [--retry] [--ping-interval S] [--ping-timeout S]
[log opts] URL``

Secrets come on stdin, read to the end at start, as one JSON object (never argv,
which every user of the host can read in /proc)::

    {"user": "u" | null, "passwd": "p" | null, "proxy": "http://[user:pass@]host:port" | null,
     "proxy_env": {"http_proxy": .., "https_proxy": .., "no_proxy": ..} | null}

Life of the worker:

- connect (websocket-client, in a thread of its own: a slow DNS lookup or connect
  must not stop the main thread from beating the heartbeat — the supervisor kills a
  worker whose heartbeat is 5 s old — nor from obeying SIGTERM at once);
- up: ``link.PortLoop`` with a ``wsmedium.WsMedium`` until the connection ends;
- backoff (``etherws.backoff``): wait, then connect again; forever, whatever the error.
  Only the very first attempt is special: when it fails without ``--retry`` the
  worker writes state "failed" and exits 0 (the supervisor removes the port and tells
  the user why).

The port's rings stay mapped across reconnects; frames the broker queues while there is
no connection are dropped and counted. Every change of state is written to
the port's status file (``etherws.runtime.portstatus``), with the last error, never a secret.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import select
import socket
import sys
import threading
import time
from collections.abc import Callable

from etherws import config
from etherws.backoff import Backoff
from etherws.keepalive import Keepalive
from etherws.runtime import portstatus, procargs
from etherws.runtime.signals import StopSignal
from etherws.tables import SlotView
from etherws.workers.attach import PortRefused
from etherws.workers.link import (
    MediumClosed,
    PortLoop,
    RingLink,
    beat_while_waiting,
    begin,
    open_link,
)
from etherws.workers.slot import claim_slot
from etherws.workers.wsconnect import CONNECT_TIMEOUT_S, Connector
from etherws.workers.wsmedium import WsMedium
from etherws.wsurl import Secrets, UrlError, take_proxy_env

log = logging.getLogger(__name__)

ATTEMPT_LIMIT_S = 3 * CONNECT_TIMEOUT_S
"""An attempt still blocked after this (a DNS lookup that hangs, a server that drips
its response) is abandoned: its thread closes whatever it gets later."""
IDLE_POLL_MS = 50
"""Broker poll slice while disconnected: bounds heartbeat age and SIGTERM latency."""


class Attempt:
    """One blocking connection attempt in a daemon thread; the main thread waits."""

    def __init__(self, connect: Callable[[], socket.socket]) -> None:
        self.done = threading.Event()
        self.sock: socket.socket | None = None
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        threading.Thread(target=self._run, args=(connect,), name="connect", daemon=True).start()

    def _run(self, connect: Callable[[], socket.socket]) -> None:
        try:
            sock = connect()
        except Exception as e:  # noqa: BLE001 - handed over: the main thread tells them apart
            self.error = e
        else:
            with self._lock:
                if self._abandoned:
                    sock.close()
                else:
                    self.sock = sock
        self.done.set()

    def abandon(self) -> None:
        """Give up on the attempt; a socket it produced (now or later) is closed."""
        with self._lock:
            self._abandoned = True
            sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class ClientWorker:
    """Connect, carry frames, back off, connect again: until SIGTERM or a first failure."""

    def __init__(self, args: argparse.Namespace, connector: Connector, counters: SlotView,
                 link: RingLink, stop: StopSignal) -> None:
        self.args = args
        self.connector = connector
        self.counters = counters
        self.link = link
        self.stop = stop
        self.backoff = Backoff()
        self.first: str | None = None  # outcome of the very first attempt
        self.last_error = ""  # shown while connecting again, until a connection is up

    def run(self) -> int:
        """The worker's life; the exit status (0: stopped, or failed for good)."""
        while not self.stop.requested:
            self._status("connecting", self.last_error)
            outcome = self._attempt()
            if outcome is None:
                break
            if isinstance(outcome, str):
                log.warning("cannot connect to %s: %s", self.connector.target, outcome)
                if self.first is None:
                    self.first = "failed"
                    if not self.args.retry:
                        self._status("failed", outcome)
                        log.error("first connection failed and --retry is not set: giving up")
                        return 0
                self._back_off(outcome)
                continue
            self.first = self.first or "ok"
            reason = self._tunnel(outcome)
            if reason is None:
                break
            log.warning("connection to %s ended: %s", self.connector.target, reason)
            self._back_off(reason)
        log.info("stopped by signal")
        return 0

    def _attempt(self) -> socket.socket | str | None:
        """A connected socket, the error as one line, or None when stopped meanwhile."""
        if self.connector.insecure and self.connector.target.secure:
            log.warning("connecting to %s WITHOUT verifying its certificate (--insecure)",
                        self.connector.target)
        attempt = Attempt(self.connector.connect)
        self._idle(time.monotonic_ns() + int(ATTEMPT_LIMIT_S * 1e9), attempt.done.is_set)
        if not attempt.done.is_set() or self.stop.requested:
            attempt.abandon()
            return None if self.stop.requested else f"no answer within {ATTEMPT_LIMIT_S:g} s"
        if attempt.error is not None:
            text = self.connector.describe(attempt.error)
            if text is None:
                raise attempt.error  # not a network failure: a bug, the supervisor restarts us
            return text
        assert attempt.sock is not None
        return attempt.sock

    def _tunnel(self, sock: socket.socket) -> str | None:
        """Carry frames until the connection ends (its reason) or SIGTERM (None)."""
        now = time.monotonic()
        self.backoff.connected(now)
        self.last_error = ""
        c = self.connector
        self._status("up", offload=c.offloaded)
        log.info("connected to %s%s%s", c.target,
                 f" through proxy {c.proxy}" if c.proxy else "",
                 " (offload: super-frames)" if c.offloaded else "")
        keepalive = Keepalive(now, self.args.ping_interval_s, self.args.ping_timeout_s)
        medium = WsMedium(sock, "client", keepalive=keepalive, offload=c.offloaded)
        try:
            PortLoop(medium, self.link, self.counters, self.stop).run()
        except MediumClosed as e:
            return e.reason
        finally:
            medium.close()
        return None

    def _back_off(self, error: str) -> None:
        """Record the failure, publish the next attempt's time, wait for it."""
        now_ns = time.monotonic_ns()
        at_s = self.backoff.failed(now_ns / 1e9, random.uniform(-1.0, 1.0))
        at_ns = max(now_ns, round(at_s * 1e9))
        self.last_error = error
        self._status("backoff", error, at_ns)
        if at_ns > now_ns:
            log.info("next attempt in %.1f s", (at_ns - now_ns) / 1e9)
        self._idle(at_ns)

    def _idle(self, until_ns: int, done: Callable[[], bool] | None = None) -> None:
        """Beat the heartbeat and drop the broker's frames until a time, ``done`` or SIGTERM."""
        link = self.link
        bell = select.poll()
        bell.register(link.bell.fileno(), select.POLLIN)

        def broker_sent(timeout_ms: int) -> object:
            link.tick()  # the session's turn (attach.PortRefused ends the worker)
            if not link.sleep_ready(down=True, room=False):
                bell.poll(timeout_ms)
            link.woken()
            return link.down.readable()

        while beat_while_waiting(self.counters, self.stop, until_ns, broker_sent,
                                 IDLE_POLL_MS, done):
            self.counters.add_drops(link.discard())

    def _status(self, state: str, error: str = "", next_retry_ns: int | None = None,
                offload: bool | None = None) -> None:
        """Publish the link state for the supervisor (never a secret)."""
        portstatus.write(self.args.rundir, self.args.port, state,
                         self.connector.scrub(error), next_retry_ns, self.first, offload)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The client's own options and its URL."""
    parser.add_argument("--cacerts", metavar="FILE",
                        help="CA certificates (PEM) to verify a wss:// server with")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the server's certificate (logged at every connect)")
    parser.add_argument("--retry", action="store_true",
                        help="keep trying when the first connection fails")
    config.add_child_arguments(parser, "client")  # the server's pings: same defaults, range
    parser.add_argument("url", help="ws://HOST[:PORT]/PATH or wss://...")


def _prepare(args: argparse.Namespace, secrets_text: str) -> Connector | str:
    """The connector, or why the port cannot work (written as state "failed")."""
    try:
        config.check_child(args, "client")
    except config.ConfigError as exc:
        return str(exc)
    # Always out of the environment, even when the request brought its own: else
    # websocket-client would read them behind our back (see wsconnect).
    own_env = take_proxy_env(os.environ)
    try:
        secrets = Secrets.from_json(secrets_text)
        env = secrets.proxy_env if secrets.proxy_env is not None else own_env
        return Connector(args.url, secrets, args.cacerts, args.insecure, env,
                         offload=not args.no_offload)
    except UrlError as e:
        return str(e)


def main(argv: list[str] | None = None) -> int:
    """Run a client port worker; the exit status (0, or EXIT_CONFIG without a slot)."""
    parser = procargs.port_parser("etherws-client-worker", "etherws client port worker")
    add_arguments(parser)
    args, stop = begin(parser, argv, "client")
    connector = _prepare(args, sys.stdin.read() if sys.stdin is not None else "")
    if isinstance(connector, str):
        log.error("%s", connector)
        portstatus.write(args.rundir, args.port, "failed", connector, None, "failed")
        return 0
    counters = claim_slot(args)
    link = None if counters is None else open_link(args, counters)
    if counters is None or link is None:
        return procargs.EXIT_CONFIG
    try:
        status = ClientWorker(args, connector, counters, link, stop).run()
        link.detach = True
        return status
    except PortRefused as e:
        log.error("%s", e)
        return procargs.EXIT_CONFIG
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main())
