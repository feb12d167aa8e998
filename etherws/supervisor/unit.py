"""The systemd unit of an etherws switch, written by ``etherws-supervisor unit`` (pure)."""

from __future__ import annotations

UNIT = """\
# etherws: install with
#   etherws-supervisor unit > /etc/systemd/system/etherws.service
#   systemctl daemon-reload && systemctl enable --now etherws
[Unit]
Description=etherws: Ethernet over WebSocket switch
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={python} -m etherws.supervisor start --foreground --rundir /run/etherws{config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=1
WatchdogSec=30
TimeoutStopSec=30
KillMode=mixed
RuntimeDirectory=etherws
RuntimeDirectoryMode=0700
# It creates TAP devices and raw sockets, sets addresses, and binds the server port.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE
DeviceAllow=/dev/net/tun rw
DevicePolicy=closed
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
NoNewPrivileges=yes
ProtectSystem=strict
# `etherws-ctl save` writes the configuration and its password files
ReadWritePaths=/etc/etherws
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def render(python: str, config: str | None = None) -> str:
    """The unit for the interpreter ``python`` (and a configuration file other than the
    default /etc/etherws/etherws.toml, which is read when it exists)."""
    return UNIT.format(python=python, config=f" --config {config}" if config else "")
