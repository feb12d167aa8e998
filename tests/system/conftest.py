"""Fixtures for system tests: every test gets its own switch and run directory."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.system.harness import Switch
from tests.system.tunnel import Underlay, underlay


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/system/" in str(item.fspath):
            item.add_marker(pytest.mark.system)


@pytest.fixture
def switch(tmp_path, rundir) -> Iterator[Switch]:
    """A running supervisor (foreground, debug log in tmp_path/switch.log)."""
    sw = Switch(rundir, tmp_path / "switch.log")
    try:
        yield sw
    finally:
        sw.close()


@pytest.fixture
def net() -> Iterator[Underlay]:
    """Namespaces A and B joined by a veth underlay (tests/system/tunnel.py)."""
    with underlay() as u:
        yield u
