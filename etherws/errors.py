"""The root of etherws' own exceptions (pure).

Every error etherws raises on purpose, with a message for the user, derives from
EtherwsError, and none is a ValueError: so a catch site names what it expects, and a
bug's ValueError (or TypeError) stays a bug with a traceback instead of turning into
"usage error, exit 2" in a command or "port failed, not restarted" in a worker::

    EtherwsError
    ├── ConfigError            config          an option or the configuration file
    ├── PortConfigError        portconfig      a [[ports]] table
    ├── RulesError             portrules       a port's VLAN, storm or rate rules
    ├── VlanError              vlan            a VLAN id or list
    ├── UrlError               wsurl           a tunnel URL, proxy or secrets record
    ├── AddressError           ifaddr          an address, netmask, MTU
    ├── FrameError             frame           an Ethernet frame or MAC address
    ├── RingError              ring            a ring file or what a ring holds
    ├── GsoError               gso             a virtio-net header that does not fit its frame
    ├── SessionError           session         a session message
    ├── EventError             events          an event stream message or endpoint
    ├── TableError             tables          a shared-memory table
    ├── HtpasswdError          htpasswd        an htpasswd line
    ├── ProbeError             probe           a path probe's size or id out of range
    ├── TokenError             token           a peer token refused
    ├── ProtocolError          wsframe         a WebSocket peer broke RFC 6455
    ├── RpcError               control         a control request answered with an error
    │   └── Refused                            ... because the supervisor said no
    ├── KeyFileError           runtime.curvekeys
    ├── ConfigFileError        runtime.configfile
    ├── TokenKeyError          runtime.tokenkey    the secret key of peer tokens
    ├── ControlSetupError      runtime.ctlclient   an endpoint or key that cannot work
    ├── UsageError             ctl.secrets         addport client's options, files
    ├── Unreachable            runtime.ctlclient   no supervisor answered
    │   └── PermissionDenied
    ├── StartError, ServerError                supervisor  a switch that cannot start
    ├── PortError              supervisor.portops  a port that cannot be made
    │   └── DeclaredError      supervisor.declared the configuration file's ports
    ├── NetifError             supervisor.netif    (also an OSError: it is one)
    ├── PortRefused            workers.attach      the broker refused a worker its port
    └── MediumClosed           workers.link        a port's medium ended

Control flow inside one function (a peer's opening that timed out or was stopped) uses
private exceptions of its own module.
"""

from __future__ import annotations


class EtherwsError(Exception):
    """An error whose message is one line for the user."""
