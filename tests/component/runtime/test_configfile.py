"""The configuration file on disk: atomic 0600 writes, secrets, ports saved with tomlkit
keeping the user's comments and layout."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from etherws.portconfig import PortSpec, ports_of
from etherws.runtime import configfile
from etherws.runtime.configfile import ConfigFileError

FILE = '''# the gateway of site A
ageout = 120   # two minutes

# the LAN
[[ports]]
tap = "ethws0"     # bridged with the VMs
address = "198.51.100.1/24"
mtu = 1400

[[ports]]
netdev = "eth9"
'''


def test_save_keeps_comments_options_and_places(tmp_path: Path) -> None:
    running = [PortSpec("tap", "ethws0", number=1, address=("198.51.100.1/24",), mtu=9000,
                        shut=True),
               PortSpec("client", "wss://b.example/", number=3, name="to-b")]
    text = configfile.render_ports(FILE, running, str(tmp_path))
    for kept in ("# the gateway of site A", "ageout = 120   # two minutes", "# the LAN",
                 'tap = "ethws0"     # bridged with the VMs',
                 'address = "198.51.100.1/24"'):
        assert kept in text
    assert "eth9" not in text and "mtu = 9000" in text and "shut = true" in text
    assert tomllib.loads(text)["ageout"] == 120
    assert ports_of(text, str(tmp_path), "f") == running


def test_save_without_ports_drops_the_tables(tmp_path: Path) -> None:
    text = configfile.render_ports(FILE, [], str(tmp_path))
    assert "[[ports]]" not in text and "ageout = 120" in text


def test_write_atomic_replaces_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "etherws.toml"
    path.write_text("old")
    path.chmod(0o644)
    configfile.write_atomic(str(path), b"new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["etherws.toml"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "etherws.toml"
    path.write_text("old")

    def disk_full(fd: int) -> None:  # a full disk shows at the latest when data is synced
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        configfile.write_atomic(str(path), b"new")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["etherws.toml"]


def test_read_secret(tmp_path: Path) -> None:
    good = tmp_path / "p"
    good.write_text("s3cret\nignored\n")
    assert configfile.read_secret(str(good), "password file") == "s3cret"
    empty = tmp_path / "e"
    empty.write_text("\n")
    for path, words in [(tmp_path / "missing", "cannot read the password file"),
                        (empty, "must hold one non-empty line")]:
        with pytest.raises(ConfigFileError) as err:
            configfile.read_secret(str(path), "password file")
        assert words in str(err.value) and str(path) in str(err.value)


def test_read_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as err:
        configfile.read(str(tmp_path / "nope.toml"))
    assert str(err.value) == f"cannot read {tmp_path}/nope.toml: No such file or directory"
