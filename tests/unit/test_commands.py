"""The one command table (control.COMMANDS) agrees with the supervisor's handlers,
etherws-ctl's verbs and ctl's views; a disagreement of any of the four is found."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from etherws import control
from etherws.control import COMMANDS, Command
from etherws.ctl import cli, render
from etherws.supervisor import handlers

# One invocation of every verb, enough for argparse to accept it.
SAMPLE_ARGS: dict[str, list[str]] = {
    "addport": ["addport", "tap", "ethws0"],
    "setport": ["setport", "1", "--shut", "1"],
    "delport": ["delport", "1"],
    "restartport": ["restartport", "1"],
    "listport": ["listport"],
    "setif": ["setif", "1", "--mtu", "1400"],
    "listif": ["listif"],
    "listfdb": ["listfdb"],
    "flushfdb": ["flushfdb"],
    "status": ["status"],
    "save": ["save"],
    "probe": ["probe", "1", "--size", "9014"],
    "token": ["token", "--ttl", "60", "--vlan", "10", "--max-macs", "2"],
}


def _ctl_verbs() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name != cli.KEYGEN and name not in cli.LIVE_VERBS}


def disagreements(commands: Iterable[Command], handler_methods: Iterable[str],
                  verbs: Mapping[str, tuple[str | None, Any]],
                  views: Mapping[str, Callable[..., str]]) -> list[str]:
    """Every way the four tables disagree; ``verbs`` maps a ctl verb to the method and
    renderer its parser sends and uses."""
    commands = list(commands)
    found: list[str] = []
    methods = {c.method for c in commands}
    found += [f"no handler for {m}" for m in sorted(methods - set(handler_methods))]
    found += [f"handler for unknown method {m}" for m in sorted(set(handler_methods) - methods)]
    declared = {c.verb: c for c in commands if c.verb is not None}
    found += [f"ctl has no verb {v}" for v in sorted(set(declared) - set(verbs))]
    found += [f"ctl verb {v} is not in the table" for v in sorted(set(verbs) - set(declared))]
    for verb, (method, renderer) in sorted(verbs.items()):
        cmd = declared.get(verb)
        if cmd is None:
            continue
        if method != cmd.method:
            found.append(f"ctl {verb} sends {method}, the table says {cmd.method}")
        want = views.get(cmd.view) if cmd.view is not None else None
        if cmd.view is not None and want is None:
            found.append(f"{cmd.method}: no view {cmd.view!r}")
        elif renderer is not want:
            found.append(f"ctl {verb} shows its result with the wrong view")
    used = {c.view for c in commands if c.view is not None}
    found += [f"view {v} is never used" for v in sorted(set(views) - used)]
    return found


def _parsed_verbs() -> dict[str, tuple[str | None, Any]]:
    parser = cli.build_parser()
    out = {}
    for verb in _ctl_verbs():
        args = parser.parse_args(SAMPLE_ARGS[verb])
        out[verb] = (args.method, args.renderer)
    return out


def test_every_verb_has_a_sample() -> None:
    assert set(SAMPLE_ARGS) == set(_ctl_verbs())


def test_the_four_tables_agree() -> None:
    assert disagreements(COMMANDS, handlers.HANDLERS, _parsed_verbs(), render.VIEWS) == []


def test_methods_and_verbs_are_unique() -> None:
    assert len({c.method for c in COMMANDS}) == len(COMMANDS)
    verbs = [c.verb for c in COMMANDS if c.verb is not None]
    assert len(set(verbs)) == len(verbs)
    assert control.METHODS == {c.method: c.params for c in COMMANDS}


@pytest.mark.parametrize("change, expected", [
    (lambda c, h, v, w: (c, [m for m in h if m != "listFdb"], v, w), "no handler for listFdb"),
    (lambda c, h, v, w: (c, [*h, "bogus"], v, w), "handler for unknown method bogus"),
    (lambda c, h, v, w: (c, h, {k: x for k, x in v.items() if k != "setif"}, w),
     "ctl has no verb setif"),
    (lambda c, h, v, w: (c, h, {**v, "frob": ("frob", None)}, w),
     "ctl verb frob is not in the table"),
    (lambda c, h, v, w: (c, h, {**v, "delport": ("restartPort", None)}, w),
     "ctl delport sends restartPort, the table says delPort"),
    (lambda c, h, v, w: (c, h, {**v, "listport": ("listPort", render.fdb)}, w),
     "ctl listport shows its result with the wrong view"),
    (lambda c, h, v, w: (c, h, v, {k: x for k, x in w.items() if k != "fdb"}),
     "listFdb: no view 'fdb'"),
    (lambda c, h, v, w: (c, h, v, {**w, "extra": render.fdb}), "view extra is never used"),
])
def test_a_disagreement_is_found(change: Callable[..., tuple[Any, Any, Any, Any]],
                                 expected: str) -> None:
    tables = change(COMMANDS, list(handlers.HANDLERS), _parsed_verbs(), dict(render.VIEWS))
    assert expected in disagreements(*tables)
