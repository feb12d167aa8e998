"""The pure modules stay pure: no sockets, processes, clock, logging or OS calls.

Anything that decides is a plain object: data and ``now`` in, data out, no I/O.
Each pure module's source is parsed (not imported, so a violation cannot hide behind an
import-time side effect) and every import in it is checked, following imports of other
etherws modules, which must be pure as well.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
REAL_ROOT = PACKAGE_ROOT
PROCESS_PACKAGES = ("broker", "workers", "supervisor", "ctl")

# Every module directly under etherws/ is pure, found by glob so that a new one cannot be
# missed; plus the pure cores inside the process packages.
PURE = sorted(f"etherws.{p.stem}" for p in (PACKAGE_ROOT / "etherws").glob("*.py")
              if p.stem != "__init__") + [
    "etherws.broker.fdb",
    "etherws.broker.forwarding",
    "etherws.supervisor.policy",
    "etherws.workers.coalesce",
    "etherws.workers.pollplan",
]

FORBIDDEN = frozenset({
    "os", "sys", "socket", "select", "selectors", "time", "logging", "subprocess",
    "threading", "asyncio", "signal", "fcntl", "mmap", "ssl", "zmq", "pyroute2", "psutil",
    "websocket", "websockets", "wsproto", "simple_websocket", "ctypes", "multiprocessing",
})
# websockets' C apply_mask: a pure function over bytes (the package's I/O stays unimported).
ALLOWED = frozenset({"websockets.speedups"})
FORBIDDEN_OURS = ("etherws.runtime",) + tuple(f"etherws.{p}" for p in PROCESS_PACKAGES)


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
            # "from etherws import shm" imports the module etherws.runtime.shm.
            names.update(f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")  # a dynamic import: not checkable, so not allowed
    return names


_PURE_CORES = [m.split(".") for m in PURE]


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
            ours_io = (imported.startswith(FORBIDDEN_OURS)
                       and imported.split(".")[:3] not in _PURE_CORES)
            dynamic = imported in ("__import__", "importlib")
            if (top in FORBIDDEN and imported not in ALLOWED) or dynamic or ours_io:
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
    assert "etherws.runtime.shm -> mmap" in violations("etherws.runtime.shm")
    assert any(v.startswith("etherws.runtime.ctlclient -> zmq")
               for v in violations("etherws.runtime.ctlclient"))


@pytest.fixture
def fake_root(tmp_path: Path) -> Iterator[Path]:
    """An empty etherws/ tree under tmp_path that the checks read instead of the real one."""
    global PACKAGE_ROOT
    (tmp_path / "etherws").mkdir()
    (tmp_path / "etherws" / "__init__.py").write_text("")
    PACKAGE_ROOT = tmp_path
    try:
        yield tmp_path / "etherws"
    finally:
        PACKAGE_ROOT = REAL_ROOT


def test_a_forbidden_import_added_to_a_pure_module_fails(fake_root: Path) -> None:
    # What a contributor would do: add "import os" or a runtime helper to a pure module.
    fake = fake_root
    (fake / "frame.py").write_text((REAL_ROOT / "etherws" / "frame.py").read_text())
    (fake / "runtime").mkdir()
    (fake / "runtime" / "__init__.py").write_text("")
    (fake / "runtime" / "shm.py").write_text("import mmap\n")
    (fake / "newpure.py").write_text("from etherws import frame\n")
    assert violations("etherws.newpure") == []
    (fake / "newpure.py").write_text("from etherws import frame\nimport os\n")
    assert violations("etherws.newpure") == ["etherws.newpure -> os"]
    (fake / "newpure.py").write_text("from etherws.runtime import shm\n")
    assert "etherws.newpure -> etherws.runtime.shm" in violations("etherws.newpure")


def _package_of(module: str) -> str | None:
    """The process package an etherws module belongs to, or None for pure/runtime code."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in PROCESS_PACKAGES else None


def import_violations(package: str) -> list[str]:
    """Imports of another process package by any module of ``package``."""
    found = []
    for path in sorted((PACKAGE_ROOT / "etherws" / package).glob("*.py")):
        module = (f"etherws.{package}.{path.stem}" if path.stem != "__init__"
                  else f"etherws.{package}")
        tree = ast.parse(path.read_text(), filename=str(path))
        for imported in sorted(imported_names(module, tree)):
            other = _package_of(imported) or (
                imported.split(".")[1] if imported.count(".") == 1
                and imported.split(".")[1] in PROCESS_PACKAGES else None)
            if other is not None and other != package:
                found.append(f"{module} -> {imported}")
    return found


@pytest.mark.parametrize("package", PROCESS_PACKAGES)
def test_process_packages_never_import_each_other(package: str) -> None:
    assert import_violations(package) == []


def test_the_import_check_finds_a_cross_import(fake_root: Path) -> None:
    fake = fake_root
    for pkg in ("supervisor", "workers"):
        (fake / pkg).mkdir()
        (fake / pkg / "__init__.py").write_text("")
    (fake / "workers" / "listener.py").write_text("X = 1\n")
    (fake / "supervisor" / "server.py").write_text("from etherws.workers.listener import X\n")
    assert import_violations("supervisor") == [
        "etherws.supervisor.server -> etherws.workers.listener"]
    (fake / "supervisor" / "server.py").write_text("from etherws.paths import RunDir\n")
    assert import_violations("supervisor") == []


def test_relative_and_dynamic_imports_are_resolved() -> None:
    tree = ast.parse("from . import frame\nfrom .frame import Mac\nimport os.path\n"
                     "def f():\n    __import__('socket')\n")
    assert imported_names("etherws.ring", tree) == {
        "etherws", "etherws.frame", "os.path", "__import__"}


def test_spec_lookup_agrees_with_python() -> None:
    spec = importlib.util.find_spec("etherws.frame")
    assert spec is not None and Path(spec.origin or "") == source_path("etherws.frame")
