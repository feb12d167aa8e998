"""TUN/TAP device ioctls (I/O): attach to a TAP, make it persistent, delete it.

A TAP port's device is created persistent by the supervisor while the port exists, so a
restarted worker re-attaches to the same interface and the kernel keeps its addresses,
MTU and bridge membership. The worker itself only attaches and never changes
persistence. Constants are from ``include/uapi/linux/if_tun.h``. A read or a write on
a TAP fd costs about 1 µs of CPU per 1514-byte frame (measured on the 2-core test
machine), so a plain ``os.read``/``os.write`` loop needs no helper library.

Kernel behaviour this module relies on (``drivers/net/tun.c``, ``tun_set_iff``):

- TUNSETIFF on a name that does not exist creates a TAP (non-persistent: it disappears
  when its last fd closes, unless TUNSETPERSIST 1 was set).
- TUNSETIFF on an existing device that is not a TAP (a TUN, ``lo``, a NIC), or a
  multi-queue TAP opened without IFF_MULTI_QUEUE, fails with EINVAL.
- A single-queue TAP takes one fd: a second attach fails with EBUSY.
- The name is looked up in the network namespace the opener was in when it opened
  /dev/net/tun.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from etherws.ifaddr import valid_ifname

TUN_DEVICE = "/dev/net/tun"

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
TUN_F_USO4, TUN_F_USO6 = 0x20, 0x40
"""Offloads a TAP user may take (TUNSETOFFLOAD): the kernel then hands over, and takes,
frames with partial checksums and TCP (and, since Linux 6.2, UDP) super-frames."""


_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, padding to 40 bytes

_ATTACH_ERRORS = {
    errno.EINVAL: "it exists and is not a single-queue TAP device (a TUN, a NIC, lo, "
                  "or a multi-queue TAP)",
    errno.EBUSY: "it is already attached to another process",
    errno.EPERM: "not permitted (needs CAP_NET_ADMIN, or the TAP belongs to another "
                 "user or group)",
}


def attach_tap(name: str, vnet: bool = False) -> int:
    """Attach to TAP ``name`` (creating a non-persistent one if it does not exist).

    Returns a non-blocking, close-on-exec fd that reads and writes raw Ethernet frames
    (IFF_NO_PI: no packet-information header); with ``vnet`` each behind a 10-byte
    virtio-net header (``etherws.gso``). Raises OSError with a message naming the device
    and the reason.
    """
    if not valid_ifname(name):
        raise OSError(errno.EINVAL, f"invalid interface name {name!r} (1..15 bytes, "
                                    "no '/', ':', '%' or whitespace)")
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"cannot open {TUN_DEVICE}: {e.strerror} "
                               "(is the tun module loaded, are we root?)") from None
    try:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(os.fsencode(name), flags))
    except OSError as e:
        os.close(fd)
        reason = _ATTACH_ERRORS.get(e.errno or 0, e.strerror)
        raise OSError(e.errno, f"cannot attach to TAP {name!r}: {reason}") from None
    return fd


def set_offload(fd: int, wanted: int) -> int:
    """Enable the TUN_F_* offloads of ``wanted`` that the kernel has on a TAP attached
    with ``vnet``; the ones enabled. A kernel refuses a set with a flag it does not
    know (EINVAL), so UDP segmentation is asked for first and dropped if refused."""
    for flags in (wanted, wanted & ~(TUN_F_USO4 | TUN_F_USO6)):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    return 0


def _set_persist(name: str, persist: bool) -> None:
    fd = attach_tap(name)
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 1 if persist else 0)
    except OSError as e:
        raise OSError(e.errno, f"cannot set TAP {name!r} persistence: {e.strerror}") from None
    finally:
        os.close(fd)


def create_persistent_tap(name: str) -> None:
    """Create TAP ``name`` (or take an existing one) and make it persistent (supervisor).

    The device stays after this returns, link down and without carrier until a worker
    attaches. Raises OSError as attach_tap does, e.g. EBUSY while a process holds it.
    """
    _set_persist(name, True)


def delete_persistent_tap(name: str) -> None:
    """Clear persistence of TAP ``name``, so it disappears now (supervisor).

    Stop the port's worker first: while it is attached this fails with EBUSY. A name
    that does not exist is fine (the device is created and vanishes at once).
    """
    _set_persist(name, False)
