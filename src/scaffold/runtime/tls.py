"""Node identity: the network's certificate authority, one certificate per node, and the TLS
contexts of the control connections (docs/security.md, docs/protocol.md §6.6).

A certificate names one node (subject CN) and its role (subject OU: ``controller``, ``host``,
``flow-switch``, ``object-switch`` or ``operator``), optionally with the IP addresses it may
announce (IP subjectAltNames). Keys are Ed25519 (``cryptography``); every control connection
is mutual TLS 1.3 (the standard ``ssl`` module) under the network's CA, and the controller
takes a node's name and role from its certificate, never from what it says.

A credentials directory holds ``ca.crt`` (the network's CA certificate), ``node.crt`` and
``node.key`` (the node's own); a CA directory ``ca.crt``, ``ca.key`` and ``crl.pem`` (the
certificates revoked so far, signed by the CA; the controller re-reads it when it changes and
refuses those serials). Keys and directories are readable by their owner only.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from ..errors import ConfigError
from ..ids import check_node_name

__all__ = [
    "ROLES",
    "CertificateAuthority",
    "CredentialStore",
    "Credentials",
    "Identity",
    "RevocationList",
    "client_context",
    "peer_identity",
    "revoked_serials",
    "server_context",
]

#: the roles a certificate can name
ROLES = ("controller", "host", "flow-switch", "object-switch", "operator")
#: node certificates are valid this long (rotate by issuing a new one; docs/security.md)
NODE_VALIDITY = datetime.timedelta(days=365)
CA_VALIDITY = datetime.timedelta(days=3650)
_CA_CERT, _CA_KEY, _CRL = "ca.crt", "ca.key", "crl.pem"
_NODE_CERT, _NODE_KEY = "node.crt", "node.key"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is at the other end of a TLS connection, from its verified certificate."""

    name: str
    role: str
    #: the IP addresses the certificate names (subjectAltName); empty: any that the
    #: connection itself comes from
    addresses: frozenset[str] = frozenset()
    serial: int = 0


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable and writable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _pem_key(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    """The network's CA: it issues node certificates and revokes them (a CRL)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Load the CA kept in ``directory``.

        Raises:
            ConfigError: there is no CA there, or its files are not a CA's.
        """
        self.directory = Path(directory)
        try:
            self.certificate = x509.load_pem_x509_certificate((self.directory / _CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((self.directory / _CA_KEY).read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.directory}: not a certificate authority: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{self.directory}: the CA key is not Ed25519")
        self._key = key

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], name: str = "scaffold network CA"
    ) -> CertificateAuthority:
        """Make a new CA in ``directory`` (created owner-only), with an empty CRL.

        Raises:
            ConfigError: a CA exists there already.
        """
        path = Path(directory)
        if (path / _CA_KEY).exists():
            raise ConfigError(f"{path}: a certificate authority exists there already")
        _private_dir(path)
        key = ed25519.Ed25519PrivateKey.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, None)
        )
        _write_private(path / _CA_KEY, _pem_key(key))
        (path / _CA_CERT).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        ca = cls(path)
        ca.revoke([])
        return ca

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike[str]) -> CertificateAuthority:
        """The CA in ``directory``, made there first if there is none."""
        if (Path(directory) / _CA_KEY).exists():
            return cls(directory)
        return cls.create(directory)

    @property
    def crl_path(self) -> Path:
        return self.directory / _CRL

    def issue(
        self,
        name: str,
        role: str,
        directory: str | os.PathLike[str],
        *,
        addresses: Iterable[str] = (),
        validity: datetime.timedelta = NODE_VALIDITY,
    ) -> Credentials:
        """Issue a certificate for node ``name`` in ``role`` and write it, with a new key
        and the CA certificate, to ``directory`` (created owner-only). ``addresses`` are the
        IPs it may announce in ``Hello``.

        Raises:
            UsageError: a bad name, role or address.
        """
        check_node_name(name)
        if role not in ROLES:
            raise ConfigError(f"not a role: {role!r} (want one of {', '.join(ROLES)})")
        try:
            ips = [ipaddress.ip_address(a) for a in addresses]
        except ValueError as exc:
            raise ConfigError(f"not an IP address: {exc}") from None
        key = ed25519.Ed25519PrivateKey.generate()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if ips:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), critical=False
            )
        certificate = builder.sign(self._key, None)
        path = Path(directory)
        _private_dir(path)
        _write_private(path / _NODE_KEY, _pem_key(key))
        (path / _NODE_CERT).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (path / _CA_CERT).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return Credentials(path)

    def revoke(self, serials: Iterable[int]) -> None:
        """Add ``serials`` to the CRL (rewritten whole); a controller that watches it
        refuses them from its next connection on and closes their live connections."""
        revoked = set(revoked_serials(self.crl_path)) | set(serials)
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + CA_VALIDITY)
        )
        for serial in sorted(revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(self._key, None)
        tmp = self.crl_path.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        tmp.replace(self.crl_path)


class Credentials:
    """One node's credentials directory: ``ca.crt``, ``node.crt``, ``node.key``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Read the identity of the credentials in ``directory``.

        Raises:
            ConfigError: a file is missing or is not a certificate.
        """
        self.directory = Path(directory)
        for file in (_CA_CERT, _NODE_CERT, _NODE_KEY):
            if not (self.directory / file).is_file():
                raise ConfigError(f"{self.directory}: no {file} (not a credentials directory)")
        try:
            cert = x509.load_pem_x509_certificate((self.directory / _NODE_CERT).read_bytes())
        except ValueError as exc:
            raise ConfigError(f"{self.directory}: {_NODE_CERT} is not a certificate: {exc}") from None
        self.identity = _identity(cert)

    @property
    def ca_file(self) -> Path:
        return self.directory / _CA_CERT

    @property
    def cert_file(self) -> Path:
        return self.directory / _NODE_CERT

    @property
    def key_file(self) -> Path:
        return self.directory / _NODE_KEY

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def role(self) -> str:
        return self.identity.role


class CredentialStore:
    """A directory with a network's CA (``ca/``) and the credentials issued from it, one
    directory per node (``nodes/NAME/``) and the operator's (``operator/``): what ``scaffold
    up`` keeps in its state directory and an embedded network in a temporary one."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Open the store in ``directory``, making it (and its CA) if there is none.

        Raises:
            ConfigError: its CA is unreadable.
        """
        self.directory = Path(directory)
        _private_dir(self.directory)
        self.ca = CertificateAuthority.open_or_create(self.directory / "ca")

    def node(self, name: str, role: str, addresses: Iterable[str] = ()) -> Credentials:
        """The credentials of node ``name`` in ``role``, issued now if there are none (or
        they name another role or fewer addresses).

        Raises:
            UsageError: a bad name, role or address.
        """
        check_node_name(name)
        return self._get(self.directory / "nodes" / name, name, role, frozenset(addresses))

    def operator(self) -> Credentials:
        """The network operator's credentials (for ``status``, churn and fault commands)."""
        return self._get(self.directory / "operator", "operator", "operator", frozenset())

    def _get(self, path: Path, name: str, role: str, addresses: frozenset[str]) -> Credentials:
        _private_dir(path.parent)
        if (path / _NODE_CERT).exists():
            with contextlib.suppress(ConfigError):
                found = Credentials(path)
                if found.role == role and found.name == name and addresses <= found.identity.addresses:
                    return found
        return self.ca.issue(name, role, path, addresses=addresses)


def _identity(cert: x509.Certificate) -> Identity:
    def attribute(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        value = values[0].value if values else ""
        return value if isinstance(value, str) else value.decode(errors="replace")

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = frozenset(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        ips = frozenset()
    return Identity(
        attribute(NameOID.COMMON_NAME), attribute(NameOID.ORGANIZATIONAL_UNIT_NAME), ips, cert.serial_number
    )


def _context(purpose: ssl.Purpose, credentials: Credentials) -> ssl.SSLContext:
    context = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(credentials.cert_file, credentials.key_file)
    context.load_verify_locations(cafile=credentials.ca_file)
    # Names are checked against the certificate's CN and role after the handshake, by the
    # controller (Hello) and by nodes (the peer must be the controller), not as DNS names.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(credentials: Credentials) -> ssl.SSLContext:
    """The controller's context: TLS 1.3, a client certificate under the CA required.
    (Revoked certificates are refused after the handshake, by serial: ``RevocationList``.)

    Raises:
        ssl.SSLError, OSError: the files cannot be loaded.
    """
    context = _context(ssl.Purpose.CLIENT_AUTH, credentials)
    # Nodes open a fresh connection each time (never a resumed session): session tickets
    # would only cost a quarter of each handshake's CPU (bench/control_tls.py).
    context.num_tickets = 0
    return context


def client_context(credentials: Credentials) -> ssl.SSLContext:
    """A node's or operator's context towards the controller: TLS 1.3, its certificate
    presented, the controller's verified under the CA.

    Raises:
        ssl.SSLError, OSError: the files cannot be loaded.
    """
    return _context(ssl.Purpose.SERVER_AUTH, credentials)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """The identity in the verified certificate of a connection's peer; None without one."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return _identity(x509.load_der_x509_certificate(der))


class RevocationList:
    """The serials a CRL file revokes, read again whenever the file changes."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._stamp: tuple[int, int] | None = None
        self.serials: frozenset[int] = frozenset()

    def refresh(self) -> bool:
        """Re-read the file if it changed; True if the list changed."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        serials = revoked_serials(self.path)
        changed = serials != self.serials
        self.serials = serials
        return changed


def revoked_serials(crl_path: str | os.PathLike[str]) -> frozenset[int]:
    """The serial numbers a CRL file lists (empty if there is no such file)."""
    try:
        crl = x509.load_pem_x509_crl(Path(crl_path).read_bytes())
    except (OSError, ValueError):
        return frozenset()
    return frozenset(entry.serial_number for entry in crl)
