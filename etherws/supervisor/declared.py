"""The ports of the configuration file: created at start, saved, reloaded (I/O).

The file is the switch's durable state: ``start`` creates its ports with their numbers,
``save`` writes the running ports back into it, ``reload`` (SIGHUP) applies the
difference. ``Declared.saved`` is the file's ports as last read or written, by number:
a running port that differs from it is ``unsaved`` in listport.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

from etherws import config
from etherws.config import ConfigError
from etherws.portconfig import PortConfigError, PortSpec, plan, ports_of
from etherws.runtime import configfile
from etherws.runtime.configfile import ConfigFileError
from etherws.supervisor import portops
from etherws.supervisor.portops import PortError
from etherws.supervisor.ports import Port, PortManager
from etherws.tables import PortKind
from etherws.wsurl import Secrets, split_proxy

log = logging.getLogger(__name__)


class DeclaredError(PortError):
    """The file cannot be used (or saved); nothing was changed."""


def read_ports(path: str) -> list[PortSpec]:
    """The ports ``path`` declares, its daemon options checked too; DeclaredError."""
    try:
        text = configfile.read(path)
        ports = ports_of(text, os.path.dirname(path), path)
        config.parse_toml(text, os.path.dirname(path))  # the whole file must be valid
        return ports
    except (ConfigFileError, PortConfigError) as exc:
        raise DeclaredError("bad-config", str(exc)) from None
    except ConfigError as exc:
        raise DeclaredError("bad-config", config.in_file(exc, path)) from None


@dataclass
class Declared:
    """The configuration file the switch started from, and its ports as last read."""

    path: str | None
    saved: dict[int, PortSpec] = field(default_factory=dict)

    def unsaved(self, port: Port) -> bool:
        """True when ``save`` would write this port differently (or at all)."""
        if port.spec is None:
            return False  # an accepted peer: never in the file
        return self.saved.get(port.number) != port.spec

    # --- start ------------------------------------------------------------------------
    def start(self, ports: PortManager, specs: list[PortSpec]) -> None:
        """Create the declared ports in order (clients keep retrying: the far side may
        come up later); PortError naming the port when one cannot be created."""
        for spec in specs:
            assert spec.number is not None
            ports.reserve(spec.number)
        for spec in specs:
            self._create(ports, spec)
            log.info("port %d (%s): declared in %s", spec.number, spec.label, self.path)
        self.saved = {s.number: s for s in specs if s.number is not None}

    def _create(self, ports: PortManager, spec: PortSpec) -> Port:
        try:
            return portops.create(ports, spec, portops.file_secrets(spec), retry=True,
                                  declared=True)
        except PortError as exc:
            raise PortError(exc.reason, f"{self.path}: port {spec.number} ({spec.label}): "
                                        f"{exc}") from None

    # --- reload -----------------------------------------------------------------------
    def reload(self, ports: PortManager) -> list[str]:
        """Apply the file's ports to the running switch; the changes, one line each.

        A file that cannot be used is refused before anything changes. Ports added at
        runtime and never saved are left alone, unless the file now declares their
        number; accepted peers are never touched.
        """
        if self.path is None:
            raise DeclaredError("no-config", "the switch was started without a "
                                             "configuration file")
        wanted = read_ports(self.path)
        running = {p.number: p.spec for p in ports.ports.values()
                   if p.spec is not None and (p.declared or p.number in self.saved)}
        for spec in wanted:
            other = ports.ports.get(spec.number or 0)
            if other is not None and other.number not in running:
                if other.spec is not None and other.spec == spec:
                    running[other.number] = other.spec  # added at runtime as the file says
                    continue
                raise DeclaredError("number-taken", f"{self.path}: port {spec.number} "
                                    f"({spec.label}) is taken by a port not in the file "
                                    "(save or delete it first)")
        todo = plan(running, wanted)
        done: list[str] = []
        try:
            for spec in todo.remove:
                ports.remove(ports.ports[spec.number or 0])
                done.append(f"removed port {spec.number} ({spec.label})")
            for new in todo.add:
                ports.reserve(new.number or 0)
                self._create(ports, new)
                done.append(f"added port {new.number} ({new.label})")
            for ch in todo.change:
                portops.change(ports, ports.ports[ch.new.number or 0], ch.new)
                done.append(f"changed port {ch.new.number} ({ch.new.label}): "
                            f"{', '.join(ch.what())}")
        except PortError as exc:
            # The file was valid, the system said no (a netdev gone, a bridge missing):
            # say what was done before it, so the operator knows where the switch is.
            for line in done:
                log.info("reload: %s", line)
            self.saved = {p.number: p.spec for p in ports.ports.values()
                          if p.declared and p.spec is not None}
            raise DeclaredError(exc.reason, f"{exc} (reload stopped there; "
                                f"{'; '.join(done) or 'nothing changed before it'})") from None
        for number in todo.unchanged:
            ports.ports[number].declared = True
        self.saved = {s.number: s for s in wanted if s.number is not None}
        for line in todo.summary():
            log.info("reload: %s", line)
        return todo.summary()

    # --- save -------------------------------------------------------------------------
    def save(self, ports: PortManager) -> tuple[str, int]:
        """Write the running ports into the file; (its path, how many ports)."""
        if self.path is None:
            raise DeclaredError("no-config", "the switch was started without a configuration "
                                "file: start it with --config FILE (an empty file will do)")
        base = os.path.dirname(self.path)
        try:
            text = configfile.read(self.path) if os.path.exists(self.path) else ""
            specs = [self._with_secret_files(p, base) for p in sorted(
                ports.ports.values(), key=lambda p: p.number) if p.spec is not None]
            data = configfile.render_ports(text, specs, base).encode()
            configfile.write_atomic(self.path, data)
        except (OSError, ConfigFileError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise DeclaredError("save-failed", f"cannot save {self.path}: {why}") from None
        for spec in specs:
            port = ports.ports[spec.number or 0]
            port.spec, port.declared = spec, True
        self.saved = {s.number: s for s in specs if s.number is not None}
        log.info("saved %d ports to %s", len(specs), self.path)
        return self.path, len(specs)

    def _with_secret_files(self, port: Port, base: str) -> PortSpec:
        """The port's spec with its inline secrets written to files beside the
        configuration (0600), referenced by passwd-file and proxy-auth-file."""
        spec = port.spec
        assert spec is not None
        if port.kind is not PortKind.CLIENT:
            return spec
        stem = os.path.splitext(os.path.basename(self.path or "etherws"))[0]
        secrets: Secrets = port.secrets
        if spec.user and secrets.passwd is not None and spec.passwd_file is None:
            path = os.path.join(base, f"{stem}.port{port.number}.passwd")
            configfile.write_atomic(path, secrets.passwd.encode() + b"\n")
            spec = replace(spec, passwd_file=path)
        if secrets.proxy and spec.proxy_auth_file is None:
            bare, auth = split_proxy(secrets.proxy)
            if auth is not None:
                path = os.path.join(base, f"{stem}.port{port.number}.proxy-auth")
                configfile.write_atomic(path, auth.encode() + b"\n")
                spec = replace(spec, proxy=bare, proxy_auth_file=path)
        return spec
