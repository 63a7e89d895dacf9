"""Credentials and ownership on the command line (docs/security.md).

* ``scaffold credentials issue NAME --role ROLE --out DIR [--ip IP ...]``: a certificate for a
  node (or an operator) on another machine, from the CA of the running network (its state
  file) or of ``--ca DIR``; ``credentials revoke DIR|--serial N``: the controller refuses it
  from then on; ``credentials show DIR``.
* ``scaffold owner new --out KEY``: an owner key (Ed25519); prints its public key and how its
  objects are named (``owner:KEY/NAME``, ``obj:...``).
* ``scaffold grant --owner KEY (--host H | --dc DC) --valid SECONDS --out FILE``: a grant
  that lets a host (or a datacenter's hosts) serve the owner's objects until it expires
  (``scaffold publish --grant FILE``, ``Host.start_server(grant=...)``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from rich.console import Console

from ..core.ownership import owner_public_key, sign_grant
from ..deploy.state_file import DEFAULT_STATE, load_state
from ..errors import ConfigError
from ..ids import ObjectId, check_node_name
from ..runtime.tls import ROLES, CertificateAuthority, Credentials

__all__ = ["add_commands", "load_owner_key"]


def _say(text: str) -> None:
    Console(stderr=True).print(text, highlight=False)


def _ca(args: argparse.Namespace) -> CertificateAuthority:
    if args.ca:
        return CertificateAuthority(args.ca)
    return load_state(args.state).credential_store().ca


def _issue(args: argparse.Namespace) -> int:
    ca = _ca(args)
    credentials = ca.issue(check_node_name(args.name), args.role, args.out, addresses=args.ip)
    _say(
        f"[green]issued[/] {credentials.role} {credentials.name!r} "
        f"(serial {credentials.identity.serial:x}) in {credentials.directory}"
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if args.serial is None and args.credentials is None:
        raise ConfigError("say which: a credentials directory, or --serial HEX")
    serial = (
        int(args.serial, 16) if args.serial is not None else Credentials(args.credentials).identity.serial
    )
    _ca(args).revoke([serial])
    _say(f"[green]revoked[/] serial {serial:x}; the controller refuses it from now on")
    return 0


def _show(args: argparse.Namespace) -> int:
    identity = Credentials(args.credentials).identity
    addresses = ", ".join(sorted(identity.addresses)) or "(any it connects from)"
    print(f"name {identity.name}\nrole {identity.role}\naddresses {addresses}\nserial {identity.serial:x}")
    return 0


def load_owner_key(path: str | os.PathLike[str]) -> ed25519.Ed25519PrivateKey:
    """The owner key in ``path`` (PEM, as ``scaffold owner new`` writes it).

    Raises:
        ConfigError: no such file, or not an Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not an owner key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


def _owner_new(args: argparse.Namespace) -> int:
    path = Path(args.out)
    if path.exists():
        raise ConfigError(f"{path} exists; an owner key is never overwritten")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = owner_public_key(key).hex()
    print(f"owner key {public}")
    print(f"objects   owner:{public}/NAME  (e.g. {ObjectId.from_owner(bytes.fromhex(public), 'NAME')})")
    return 0


def _grant(args: argparse.Namespace) -> int:
    if bool(args.host) == bool(args.dc):
        raise ConfigError("a grant names one --host or one --dc")
    where = check_node_name(args.host or args.dc)
    if not args.valid > 0:
        raise ConfigError(f"--valid must be > 0 seconds, got {args.valid}")
    key = load_owner_key(args.owner)
    expires = time.time() + args.valid
    data = sign_grant(key, expires=expires, host=args.host or "", dc=args.dc or "")
    Path(args.out).write_bytes(data)
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires))
    _say(
        f"[green]granted[/] {'host' if args.host else 'datacenter'} {where!r} the objects of owner "
        f"{owner_public_key(key).hex()[:16]}… until {until}"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register ``credentials``, ``owner`` and ``grant`` on the ``scaffold`` parser."""
    creds = sub.add_parser("credentials", help="issue, revoke or show node and operator certificates")
    kinds = creds.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    ca_options = argparse.ArgumentParser(add_help=False)
    ca_options.add_argument(
        "--state", default=str(DEFAULT_STATE), help="state file of `scaffold up` (its CA)"
    )
    ca_options.add_argument("--ca", help="a CA directory instead (ca.crt, ca.key, crl.pem)")
    issue = kinds.add_parser("issue", parents=[ca_options], help="a certificate for a node or an operator")
    issue.add_argument("name", help="the node's name (as in the topology) or the operator's")
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--out", required=True, help="directory to write ca.crt, node.crt and node.key to")
    issue.add_argument(
        "--ip",
        action="append",
        default=[],
        help="an IP the node may announce (default: the one it connects from)",
    )
    issue.set_defaults(func=_issue)
    revoke = kinds.add_parser("revoke", parents=[ca_options], help="the controller refuses a certificate")
    revoke.add_argument("credentials", nargs="?", help="the credentials directory to revoke")
    revoke.add_argument("--serial", help="or its serial number (hex)")
    revoke.set_defaults(func=_revoke)
    show = kinds.add_parser("show", help="the name, role, addresses and serial of credentials")
    show.add_argument("credentials")
    show.set_defaults(func=_show)

    owner = sub.add_parser("owner", help="owner keys of self-certifying objects")
    owner_kinds = owner.add_subparsers(dest="owner_command", required=True, metavar="ACTION")
    new = owner_kinds.add_parser("new", help="make an owner key (Ed25519)")
    new.add_argument("--out", required=True, help="file to write the private key to (owner-only)")
    new.set_defaults(func=_owner_new)

    grant = sub.add_parser("grant", help="let a host or datacenter serve an owner's objects for a while")
    grant.add_argument("--owner", required=True, help="the owner key file")
    grant.add_argument("--host", help="the host it lets serve")
    grant.add_argument("--dc", help="or the datacenter whose hosts it lets serve")
    grant.add_argument("--valid", type=float, default=86400.0, help="seconds from now (default one day)")
    grant.add_argument("--out", required=True, help="file to write the signed grant to")
    grant.set_defaults(func=_grant)
