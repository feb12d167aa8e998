"""One root for etherws' errors, and none of them a ValueError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import etherws
from etherws.errors import EtherwsError

CONTROL_FLOW = {"etherws.workers.peer.OpeningEnded", "etherws.workers.peer.TimedOut",
                "etherws.workers.peer.Stopped"}
"""Private to one module's control flow, never shown to a user."""


def _exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(etherws.__path__, "etherws."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) \
                    and obj.__module__ == info.name and not name.startswith("_"):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_of_ours_derives_from_the_root() -> None:
    errors = _exceptions()
    assert len(errors) > 20
    outside = sorted(n for n, e in errors.items()
                     if not issubclass(e, EtherwsError) and n not in CONTROL_FLOW)
    assert outside == []


def test_no_error_of_ours_is_a_value_error() -> None:
    assert sorted(n for n, e in _exceptions().items() if issubclass(e, ValueError)) == []


def test_the_tree_in_the_docstring_names_every_error() -> None:
    import etherws.errors as errors
    doc = errors.__doc__ or ""
    missing = sorted(n for n, e in _exceptions().items()
                     if issubclass(e, EtherwsError) and e is not EtherwsError
                     and e.__name__ not in doc)
    assert missing == []
