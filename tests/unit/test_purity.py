"""The pure modules stay pure: no sockets, processes, clock, logging or OS calls.

STYLE habit 1: anything that decides is a plain object, data and ``now`` in, data out.
Each pure module's source is parsed (not imported, so a violation cannot hide behind an
import-time side effect) and every import in it is checked, following imports of other
etherws modules, which must be pure as well.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PURE = [
    "etherws.frame",
    "etherws.ipc",
    "etherws.tables",
    "etherws.control",
    "etherws.paths",
    "etherws.render",
    "etherws.broker.fdb",
    "etherws.broker.forwarding",
    "etherws.supervisor.policy",
    "etherws.config",
    "etherws.ifaddr",
    "etherws.htpasswd",
    "etherws.wsframe",
    "etherws.wshandshake",
    "etherws.backoff",
    "etherws.keepalive",
    "etherws.workers.coalesce",
]

FORBIDDEN = frozenset({
    "os", "sys", "socket", "select", "selectors", "time", "logging", "subprocess",
    "threading", "asyncio", "signal", "fcntl", "mmap", "ssl", "zmq", "pyroute2", "psutil",
    "websocket", "wsproto", "simple_websocket",
})

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def source_path(module: str) -> Path:
    """The source file of an etherws module, found without importing it."""
    parts = module.split(".")
    for candidate in (PACKAGE_ROOT.joinpath(*parts).with_suffix(".py"),
                      PACKAGE_ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{module} has no source file under {PACKAGE_ROOT}")


def is_module(name: str) -> bool:
    """True when ``name`` (an etherws dotted name) is a module or package of ours."""
    try:
        source_path(name)
    except FileNotFoundError:
        return False
    return True


def imported_names(module: str, tree: ast.AST) -> set[str]:
    """Every module name imported anywhere in ``tree`` (also inside functions), resolved."""
    package = module if source_path(module).name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            # "from etherws import shm" imports the module etherws.shm.
            names.update(f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")  # a dynamic import: not checkable, so not allowed
    return names


def violations(module: str) -> list[str]:
    """Forbidden imports of ``module`` and of the etherws modules it imports, with the path."""
    found: list[str] = []
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(module, (module,))]
    while todo:
        name, chain = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(source_path(name).read_text(), filename=str(source_path(name)))
        for imported in sorted(imported_names(name, tree)):
            top = imported.split(".")[0]
            if top in FORBIDDEN or imported in ("__import__", "importlib"):
                found.append(" -> ".join(chain + (imported,)))
            elif top == "etherws" and is_module(imported):
                todo.append((imported, chain + (imported,)))
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    assert source_path(module).is_file(), f"{module} is listed as pure but does not exist"
    assert violations(module) == []


def test_the_check_finds_io() -> None:
    # The checker itself: an I/O module of ours must be caught, directly and by import.
    assert "etherws.shm -> mmap" in violations("etherws.shm")
    assert any(v.startswith("etherws.ctlclient -> zmq") for v in violations("etherws.ctlclient"))


def test_relative_and_dynamic_imports_are_resolved() -> None:
    tree = ast.parse("from . import frame\nfrom .frame import Mac\nimport os.path\n"
                     "def f():\n    __import__('socket')\n")
    assert imported_names("etherws.ipc", tree) == {
        "etherws", "etherws.frame", "os.path", "__import__"}


def test_spec_lookup_agrees_with_python() -> None:
    spec = importlib.util.find_spec("etherws.frame")
    assert spec is not None and Path(spec.origin or "") == source_path("etherws.frame")
