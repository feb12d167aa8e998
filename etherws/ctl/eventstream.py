"""``etherws-ctl events``: follow the supervisor's event stream (I/O).

A ZeroMQ SUB on the event socket beside the control endpoint (``etherws.events``: the
run directory's ``events.sock``, or the next port of a tcp:// control endpoint, with the
same CURVE keys). One line per event, ``HH:MM:SS what happened``, or with ``--json`` the
event's JSON object, flushed at once. The supervisor greets every new subscriber, so a
stream that stays silent past ``--timeout`` is reported unreachable (exit 3), as any
other command would be; a stopping supervisor ends the stream (exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from etherws import events
from etherws.runtime import curvekeys
from etherws.runtime.ctlclient import IPC, ControlClient, PermissionDenied, Unreachable

POLL_MS = 500


def add_parser(sub: argparse._SubParsersAction[Any],
               count: Callable[[str], int]) -> argparse.ArgumentParser:
    """The ``events`` subcommand (its runner is ``run``)."""
    help_ = ("follow the switch's events: ports added/removed/up/down, worker restarts, "
             "tunnel links, MAC addresses learned/moved/aged/flushed")
    p: argparse.ArgumentParser = sub.add_parser("events", help=help_, description=help_)
    p.add_argument("--count", metavar="N", type=count,
                   help="stop after N events (the greeting not counted)")
    return p


def endpoint_for(ctl: str) -> str:
    """The event endpoint beside the control endpoint ``ctl``."""
    if ctl.startswith(IPC):
        return events.local_endpoint(os.path.dirname(ctl[len(IPC):]))
    return events.remote_endpoint(ctl)


def _check_ipc(endpoint: str) -> None:
    path = endpoint[len(IPC):]
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise Unreachable(f"no supervisor: {path} does not exist") from None
    except PermissionError:
        raise PermissionDenied(f"permission denied on {os.path.dirname(path)} "
                               "(etherws-ctl must run as root)") from None
    if not os.access(path, os.W_OK):
        raise PermissionDenied(f"permission denied on {path} (etherws-ctl must run as root)")


def _subscriber(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                args: argparse.Namespace) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # events are small; garbage must not grow us
    if endpoint.startswith("tcp://"):
        public, secret = curvekeys.load_secret(args.ctl_key)
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = curvekeys.load_public(args.ctl_server_key)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def _line(event: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(event, sort_keys=True)
    clock = time.strftime("%H:%M:%S", time.localtime(float(event["time"])))
    return f"{clock} {events.describe(event)}"


def run(args: argparse.Namespace, client: ControlClient) -> int:
    """Print events until Ctrl-C, ``--count`` events or the supervisor's stop."""
    endpoint = endpoint_for(client.endpoint)
    if endpoint.startswith(IPC):
        _check_ipc(endpoint)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = _subscriber(ctx, endpoint, args)
    try:
        return _follow(sock, endpoint, args)
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
        ctx.term()


def _follow(sock: zmq.Socket[bytes], endpoint: str, args: argparse.Namespace) -> int:
    greeted = False
    silent_until = time.monotonic() + args.timeout
    shown = 0
    while args.count is None or shown < args.count:
        if not sock.poll(POLL_MS, zmq.POLLIN):
            if not greeted and time.monotonic() > silent_until:
                raise Unreachable(f"no event stream from the supervisor at {endpoint} "
                                  f"within {args.timeout:g}s")
            continue
        try:
            event = events.decode(sock.recv_multipart())
        except events.EventError:
            continue  # not ours to show; the stream goes on
        if event["type"] == "stream" and event["event"] == "hello":
            if greeted:
                continue  # another subscriber's greeting
            greeted = True
        elif event["type"] == "stream" and event["event"] == "bye":
            print(_line(event, args.json), flush=True)
            return 0
        else:
            shown += 1
        print(_line(event, args.json), flush=True)
    return 0
