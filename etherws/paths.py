"""Names of everything in a run directory (pure)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RUNDIR = "/run/etherws"


@dataclass(frozen=True)
class RunDir:
    """The files of one switch instance; two switches on a host use two run directories."""

    root: str = DEFAULT_RUNDIR

    def _p(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    @property
    def lock(self) -> str:
        """flock()ed by the running supervisor: a second start fails instead of taking over."""
        return self._p("lock")

    @property
    def pidfile(self) -> str:
        """The supervisor's pid, for scripts and service managers."""
        return self._p("supervisor.pid")

    @property
    def ctl_sock(self) -> str:
        """The local control socket (mode 0600)."""
        return self._p("ctl.sock")

    @property
    def session_sock(self) -> str:
        """The broker's session socket (``etherws.session``)."""
        return self._p("session.sock")

    @property
    def session_endpoint(self) -> str:
        """ZeroMQ endpoint of the broker's session socket."""
        return "ipc://" + self.session_sock

    @property
    def port_table(self) -> str:
        """Shared port table (etherws.tables.PortTable)."""
        return self._p("ports.tbl")

    @property
    def fdb_table(self) -> str:
        """Shared FDB (etherws.tables.FdbTable)."""
        return self._p("fdb.tbl")

    @property
    def accept_sock(self) -> str:
        """Where the supervisor binds the socket that receives the listener's connections."""
        return self._p("accept.sock")

    @property
    def token_key(self) -> str:
        """The secret key of peer tokens when ``--token-key`` names none (mode 0600)."""
        return self._p("token.key")

    @property
    def tokens(self) -> str:
        """The directory of the lock files of peer tokens in use."""
        return self._p("tokens")

    def token_lock(self, token_id: str) -> str:
        """flock()ed by the peer worker whose connection uses the token ``token_id``
        (16 hex digits, ``etherws.token.Claims.id``): one connection per token at once."""
        return self._p(f"tokens/{token_id}.lock")

    def verify_lock(self, slot: int) -> str:
        """Lock file of password verification slot ``slot`` (one per core)."""
        return self._p(f"verify-{slot}.lock")

    def ring(self, port: int, generation: int) -> str:
        """Port ``port``'s ring file of ``generation`` (etherws.ring); its doorbell is the
        same name with ``.bell``."""
        return self._p(f"ring-{port}-{generation:016x}")

    @property
    def broker_bell(self) -> str:
        """The broker's doorbell: a worker rings it after publishing to an armed ring."""
        return self._p("broker.bell")

    def port_status(self, port: int) -> str:
        """The link status file of tunnel port ``port`` (etherws.linkstatus)."""
        return self._p(f"port-{port}.status")

    @property
    def ctl_endpoint(self) -> str:
        """ZeroMQ endpoint of the local control socket."""
        return "ipc://" + self.ctl_sock
