"""Talk to a running controller as an operator: one ``AdminRequest``, one ``AdminReply``.

``call(address, command, credentials=...)`` sends one command record
(``core.controller.commands``: its admin name and arguments come from the record) over mutual
TLS with an operator's credentials and returns the result; the CLI's ``status``, churn, admin
and fault commands all go through it, and so can programs. ``call_raw`` sends a name and
arguments as they are, unchecked (tools, and tests of what the controller refuses).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from ..core.controller import Command
from ..errors import MalformedPacket, ScaffoldError, UsageError
from ..wire import control
from .tls import Credentials, client_context, peer_identity

__all__ = ["AdminError", "call", "call_raw", "call_sync"]

_ids = itertools.count(1)


class AdminError(UsageError):
    """The controller refused the command (its message says why)."""


async def call(
    address: tuple[str, int], command: Command, timeout: float = 10.0, *, credentials: Credentials | None
) -> Any:
    """Send ``command`` to the controller at ``address`` with operator ``credentials``
    (None: plain TCP, for a controller without credentials) and return its result.

    Raises:
        AdminError: the controller answered with an error (a refusal, or not an operator).
        ScaffoldError: the controller cannot be reached, is not the network's controller or
            answered nonsense.
    """
    return await call_raw(address, command.name, command.args(), timeout, credentials=credentials)


async def call_raw(
    address: tuple[str, int],
    name: str,
    args: dict[str, Any],
    timeout: float = 10.0,
    *,
    credentials: Credentials | None,
) -> Any:
    """Send the admin command ``name`` with ``args`` unchecked and return its result.

    Raises:
        AdminError: the controller answered with an error.
        ScaffoldError: the controller cannot be reached or answered nonsense.
    """
    try:
        if credentials is None:
            connecting = asyncio.open_connection(*address)
        else:
            connecting = asyncio.open_connection(*address, ssl=client_context(credentials))
        reader, writer = await asyncio.wait_for(connecting, timeout)
    except (OSError, TimeoutError) as exc:
        raise ScaffoldError(f"cannot reach the controller at {address[0]}:{address[1]}: {exc}") from None
    if credentials is not None:
        peer = peer_identity(writer.get_extra_info("ssl_object"))
        if peer is None or peer.role != "controller":
            writer.close()
            raise ScaffoldError(f"the peer at {address[0]}:{address[1]} is not the network's controller")
    request_id = next(_ids)
    try:
        writer.write(control.frame(control.AdminRequest(request_id, name, args)))
        decoder = control.FrameDecoder(control.MAX_FRAME_FROM_CONTROLLER)
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                for message in decoder.feed(chunk):
                    if isinstance(message, control.AdminReply) and message.id == request_id:
                        if not message.ok:
                            raise AdminError(message.error)
                        return message.result
    except TimeoutError:
        raise ScaffoldError(f"the controller did not answer {name!r} within {timeout} s") from None
    except MalformedPacket as exc:
        raise ScaffoldError(f"the controller sent a malformed reply: {exc}") from None
    except OSError as exc:  # a TLS failure: say, a certificate the controller refused
        raise ScaffoldError(
            f"the controller at {address[0]}:{address[1]} closed the connection: {exc}"
        ) from None
    finally:
        writer.close()
    raise ScaffoldError(f"the controller closed the connection without answering {name!r}")


def call_sync(
    address: tuple[str, int], command: Command, timeout: float = 10.0, *, credentials: Credentials | None
) -> Any:
    """``call`` from synchronous code (not from a running event loop)."""
    return asyncio.run(call(address, command, timeout, credentials=credentials))
