"""Certificates made with openssl in the run's work directory.

OpenVPN in TLS mode needs a CA and a certificate per side (p2p with a static key is
deprecated in 2.6); etherws's wss:// server needs a certificate for 203.0.113.2, which the
client trusts by ``--cacerts`` (a self-signed certificate is its own CA, as in README.rst).
P-256 keys: quick to make, and the cost of the handshake is not what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchlib.proc import run

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    """A CA and one certificate + key for each side of an OpenVPN link."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openvpn_pki(directory: Path) -> Pki:
    """A CA, a server certificate (serverAuth, for --remote-cert-tls server) and a
    client certificate (clientAuth), valid for two days."""
    ca, ca_key = directory / "ovpn-ca.pem", directory / "ovpn-ca.key"
    run("openssl", "req", "-x509", *_EC, "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=etherws-bench-ca")
    made = {}
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        key, csr, cert = (directory / f"ovpn-{role}.{ext}" for ext in ("key", "csr", "pem"))
        ext = directory / f"ovpn-{role}.ext"
        ext.write_text(f"keyUsage=digitalSignature\nextendedKeyUsage={usage}\n")
        run("openssl", "req", *_EC, "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN=etherws-bench-{role}")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
        made[role] = (cert, key)
    return Pki(ca, *made["server"], *made["client"])


def self_signed(directory: Path, name: str, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` (subjectAltName IP:ip): (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    run("openssl", "req", "-x509", *_EC, "-keyout", str(key), "-out", str(cert),
        "-days", "2", "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}")
    return cert, key
