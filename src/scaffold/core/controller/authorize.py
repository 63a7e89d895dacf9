"""Who may do what on the control plane: small checks the controller's paths call
(docs/protocol.md §6.6, §6.7; docs/security.md).

* ``hello_refusal``: a ``Hello`` is accepted only for the name and role of the certificate
  the connection presented, from a safe name, with an address that is an IP literal the
  certificate names (or, when it names none, the connection's own source IP).
* ``admin_refusal``: operator commands need an operator certificate; a switch may only
  report its own ports (``port``).
* ``BindPolicy``: which hosts may serve which object -- an owned object with a valid grant
  (``core.ownership``), a plain-named one where the operator's policy allows it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from ...errors import UsageError
from ...ids import NODE_NAME
from ...wire import control

__all__ = ["ANYWHERE", "NODE_ROLES", "BindPolicy", "address_refusal", "admin_refusal", "hello_refusal"]

#: roles that say ``Hello`` (an operator only sends admin commands)
NODE_ROLES = frozenset({"host", "flow-switch", "object-switch"})
#: a policy entry that lets any host serve an object
ANYWHERE = "*"


def address_refusal(address: tuple[str, int], vouched: frozenset[str], peer_ip: str | None) -> str | None:
    """Why a node may not announce ``address``; None if it may. It must be an IP literal
    (no name to resolve), a unicast one, with a port in 1..65535, and either one the node's
    certificate names (``vouched``) or, if it names none, the connection's source."""
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "hello-bad-address"
    if not 0 < port <= 65535 or ip.is_unspecified or ip.is_multicast:
        return "hello-bad-address"
    allowed = vouched if vouched else frozenset({peer_ip} if peer_ip else ())
    if str(ip) not in allowed:
        return "hello-address-mismatch"
    return None


def hello_refusal(
    hello: control.Hello, name: str, role: str, vouched: frozenset[str], peer_ip: str | None
) -> str | None:
    """Why ``hello`` is refused on a connection whose certificate names ``name`` in ``role``;
    None if it is accepted. Returns a drop reason."""
    if NODE_NAME.fullmatch(hello.node) is None:
        return "hello-bad-name"
    if role not in NODE_ROLES:
        return "hello-wrong-role"
    if hello.node != name:
        return "hello-name-mismatch"
    if hello.role != role:
        return "hello-wrong-role"
    if hello.address is not None:
        return address_refusal(hello.address, vouched, peer_ip)
    return None


def admin_refusal(command: str, args: Mapping[str, object], name: str, role: str) -> str | None:
    """Why a connection with a certificate for ``name`` in ``role`` may not run admin
    ``command``; None if it may."""
    if role == "operator":
        return None
    if command == "port" and role in ("flow-switch", "object-switch") and args.get("node") == name:
        return None
    return "admin-not-operator"


@dataclass
class BindPolicy:
    """Where plain-named objects may be served: object (hex) -> host names, datacenter
    names or ``ANYWHERE``. With ``open`` (an embedded test network) any host may serve any
    plain-named object."""

    allowed: dict[str, set[str]] = field(default_factory=dict)
    open: bool = False

    def allow(self, key: str, where: str) -> None:
        """Let ``where`` (a host, a datacenter or ``ANYWHERE``) serve object ``key``.

        Raises:
            UsageError: ``where`` is not a name.
        """
        _check_place(where)
        self.allowed.setdefault(key, set()).add(where)

    def disallow(self, key: str, where: str) -> None:
        """Take back an allow of ``where`` for object ``key`` (nothing if there was none).

        Raises:
            UsageError: ``where`` is not a name.
        """
        _check_place(where)
        places = self.allowed.get(key)
        if places is not None and where in places:
            places.discard(where)
            if not places:
                del self.allowed[key]

    def allows(self, key: str, where: str) -> bool:
        """Is ``where`` itself (a host, a datacenter or ``ANYWHERE``) on object ``key``'s list?"""
        return where in self.allowed.get(key, ())

    def permits(self, key: str, host: str, dc: str) -> bool:
        if self.open:
            return True
        places = self.allowed.get(key, ())
        return ANYWHERE in places or host in places or dc in places


def _check_place(where: str) -> None:
    if where != ANYWHERE and NODE_NAME.fullmatch(where) is None:
        raise UsageError(f"not a host or datacenter name: {where!r:.80}")
