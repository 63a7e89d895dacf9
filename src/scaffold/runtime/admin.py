"""Talk to a running controller as an operator: one ``AdminRequest``, one ``AdminReply``.

``call(address, command, credentials=...)`` sends one command record
(``core.controller.commands``: its admin name and arguments come from the record) over mutual
TLS with an operator's credentials and returns the result; the CLI's ``status``, churn, admin
and fault commands all go through it, and so can programs. ``address`` may list every
controller replica: the call goes to the first that answers, and a standby's answer names the
leader, which is asked next (docs/protocol.md §6.8). ``call_raw`` sends a name and arguments
as they are, unchecked (tools, and tests of what the controller refuses).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from ..core.controller import Command
from ..errors import MalformedPacket, ScaffoldError, UsageError
from ..wire import control
from .tls import Credentials, client_context, peer_identity

__all__ = ["AdminError", "call", "call_raw", "call_sync"]

_ids = itertools.count(1)


class AdminError(UsageError):
    """The controller refused the command (its message says why)."""


Address = tuple[str, int]
#: how long one replica of several may take to answer before the next is asked (seconds)
PER_REPLICA = 2.0
#: the error text of a standby replica's answer (``runtime/aio/controller.py``)
NOT_LEADER = "not the leader"


async def call(
    address: Address | Sequence[Address],
    command: Command,
    timeout: float = 10.0,
    *,
    credentials: Credentials | None,
) -> Any:
    """Send ``command`` to the controller at ``address`` (or to the leader of the replicas
    listed) with operator ``credentials`` (None: plain TCP, for a controller without
    credentials) and return its result.

    Raises:
        AdminError: the controller answered with an error (a refusal, or not an operator).
        ScaffoldError: the controller cannot be reached, is not the network's controller or
            answered nonsense.
    """
    return await call_raw(address, command.name, command.args(), timeout, credentials=credentials)


async def call_raw(
    address: Address | Sequence[Address],
    name: str,
    args: dict[str, Any],
    timeout: float = 10.0,
    *,
    credentials: Credentials | None,
) -> Any:
    """Send the admin command ``name`` with ``args`` unchecked and return its result; with
    several replicas, ask the leader (a standby names it; with none yet, the next one).

    Raises:
        AdminError: the controller answered with an error.
        ScaffoldError: no controller can be reached, or one answered nonsense.
    """
    given: list[Address] = [address] if isinstance(address, tuple) else [tuple(a) for a in address]  # type: ignore[misc]
    if not given:
        raise ScaffoldError("no controller address given")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    error: ScaffoldError | None = None
    leader: Address | None = None
    while True:
        # One pass over the replicas, the leader a standby named first; another pass after a
        # short wait while none leads (an election takes up to a lease's lifetime).
        order = ([leader] if leader is not None else []) + [a for a in given if a != leader]
        leader = None
        for target in order:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                wait = min(left, PER_REPLICA) if len(given) > 1 else left
                return await _call_one(target, name, args, wait, credentials)
            except _NotLeader as exc:
                error = ScaffoldError(f"no controller replica leads now (asked {len(order)})")
                if exc.leader is not None and exc.leader != target:
                    leader = exc.leader
                    break
            except AdminError:
                raise
            except ScaffoldError as exc:
                error = exc
        if loop.time() >= deadline or len(given) == 1:
            break
        if leader is None:
            await asyncio.sleep(0.1)
    raise error or ScaffoldError("no controller answered")


class _NotLeader(Exception):
    def __init__(self, leader: Address | None) -> None:
        super().__init__("not the leader")
        self.leader = leader


async def _call_one(
    address: Address, name: str, args: dict[str, Any], timeout: float, credentials: Credentials | None
) -> Any:
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
                        if not message.ok and message.error == NOT_LEADER:
                            leader = (message.result or {}).get("leader")
                            raise _NotLeader((str(leader[0]), int(leader[1])) if leader else None)
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
    address: Address | Sequence[Address],
    command: Command,
    timeout: float = 10.0,
    *,
    credentials: Credentials | None,
) -> Any:
    """``call`` from synchronous code (not from a running event loop)."""
    return asyncio.run(call(address, command, timeout, credentials=credentials))
