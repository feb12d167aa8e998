"""Fixtures for every test layer."""

from __future__ import annotations

import os
from typing import Iterator

import pytest


def _needs_root(item: pytest.Item) -> bool:
    return item.get_closest_marker("system") is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A system test that cannot run must fail loudly, not be skipped and counted as a pass:
    # CI runs as root with /dev/net/tun, so anything else is a broken environment.
    if _needs_root(item) and (os.geteuid() != 0 or not os.path.exists("/dev/net/tun")):
        pytest.fail("system tests need root and /dev/net/tun")


@pytest.fixture
def rundir(tmp_path) -> Iterator[str]:
    """An empty run directory (mode 0700) of this test's own."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    yield str(d)
