"""Object names as host names: ``scaffold.names(host)`` sends ``NAME.scaffold`` through a host.

Under ``with scaffold.names(host):`` (or ``async with``), a connection to ``NAME.scaffold``
-- any port -- is a SCAFFOLD stream to object ``NAME`` opened by ``host``: from
``asyncio.open_connection``, ``loop.create_connection`` and libraries built on them
(aiohttp, httpx through anyio, redis.asyncio), and from ``socket.create_connection``
(``http.client``, ``urllib``, ``smtplib``), which then returns a blocking
``scaffold.socket``. Every other destination is untouched. ``loop.create_server`` (so
``asyncio.start_server``, aiohttp's ``TCPSite``) on ``NAME.scaffold`` serves object ``NAME``
on ``host``. docs/architecture.md §7 tells the whole story.

**Hooks.** Python code picks a destination at a few places; each is replaced by a hook that
handles the names of an active binding and hands everything else, arguments unchanged, to
what it replaced:

* ``socket.create_connection`` (module level: any thread) -- the blocking side;
* on the host's event loop *instance* only: ``getaddrinfo`` (aiohttp's and anyio's
  resolvers), ``create_connection``, ``sock_connect`` (aiohttp's happy eyeballs connects a
  kernel socket first: to a name's address it is only noted, and ``create_connection(sock=)``
  then opens the flow and closes that socket unused), ``create_server`` and ``start_tls``
  (refused for a SCAFFOLD transport with a ``UsageError`` that says why; so is ``ssl=``).

**Addresses.** A resolver asked for ``NAME.scaffold`` gets an address of ``127.83.0.0/16``,
one per name for the life of the process (libraries cache answers). It is a loopback address:
a connection that bypasses the hooks (a kernel socket connected by hand, another event loop)
is refused on this machine and never leaves it.

**Scope, nesting, threads.** A binding is process-wide while active -- every thread and
task, as libraries resolve and connect from executor threads. Entering and leaving are
thread-safe (one lock). The first binding installs the hooks (and the first one on a loop
hooks that loop); the last one removes them, putting back exactly what was there -- unless
something else replaced a hook meanwhile, which is then left alone and ours in it passes
everything through. Bindings nest: for a name, the innermost active binding whose suffix
matches wins (on a loop, the innermost on that loop); they may be left in any order. A name
is matched without regard to case (URL libraries lower-case host names), and ``NAME`` is
what precedes the suffix, as written.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UsageError
from .sockets import SOCK_STREAM
from .sockets import socket as scaffold_socket
from .streams import NO_TLS
from .transport import StreamTransport

if TYPE_CHECKING:
    from .host import Host

__all__ = ["ADDRESS_BLOCK", "SUFFIX", "Names", "names"]

SUFFIX = ".scaffold"
#: where names' addresses come from (loopback: nothing that escapes the hooks leaves the machine)
ADDRESS_BLOCK = ipaddress.IPv4Network("127.83.0.0/16")
P = TypeVar("P", bound=asyncio.BaseProtocol)
Address = tuple[str, int]


class Names:
    """One binding: names ending in ``suffix`` reach objects through ``host``.

    ``connections`` counts the streams opened through it, ``failures`` the failed attempts
    by exception class (``ObjectNotFound``, ``BrokenPathError``, ``TimeoutError``).
    """

    def __init__(self, host: Host, suffix: str = SUFFIX) -> None:
        """A binding of ``suffix`` to ``host``, active once entered.

        Raises:
            UsageError: ``suffix`` is not a dot followed by a name.
        """
        if not suffix.startswith(".") or len(suffix.strip(".")) == 0:
            raise UsageError(f"suffix must be a dot and a name, like '.scaffold', not {suffix!r}")
        self.host = host
        self.suffix = suffix.rstrip(".").lower()
        self.connections = 0
        self.failures: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        state = "active" if self._loop is not None else "inactive"
        return f"<scaffold.names *{self.suffix} via {self.host.name} {state}>"

    def object_name(self, hostname: str) -> str | None:
        """``NAME`` for ``NAME<suffix>`` (a trailing dot allowed), else None."""
        hostname = hostname.rstrip(".")
        if len(hostname) > len(self.suffix) and hostname.lower().endswith(self.suffix):
            return hostname[: -len(self.suffix)]
        return None

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Names:
        """Activate the binding: install the hooks if it is the first (on its host's loop).

        Raises:
            UsageError: already active, or the host is not running.
        """
        _REGISTRY.enter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _REGISTRY.exit(self)

    async def __aenter__(self) -> Names:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    # -- connecting --------------------------------------------------------------------------

    async def open(
        self, protocol_factory: Callable[[], P], name: str, peername: Address
    ) -> tuple[StreamTransport, P]:
        """A stream to object ``name`` through the host, counted.

        Raises:
            ObjectNotFound, BrokenPathError, TimeoutError: as ``Host.create_connection``.
        """
        try:
            result = await self.host.create_connection(protocol_factory, name, peername=peername)
        except OSError as exc:
            self.failures[type(exc).__name__] += 1
            raise
        self.connections += 1
        return result

    def connect_blocking(self, name: str, peername: Address, timeout: float | None) -> scaffold_socket:
        """A connected blocking ``scaffold.socket`` to object ``name``, counted.

        Raises:
            ObjectNotFound, BrokenPathError, TimeoutError: as ``scaffold.socket.connect``.
        """
        sock = scaffold_socket(SOCK_STREAM, host=self.host)
        sock.settimeout(timeout)
        try:
            sock._connect(name, peername)
        except OSError as exc:
            self.failures[type(exc).__name__] += 1
            sock.close()
            raise
        self.connections += 1
        return sock


def names(host: Host, suffix: str = SUFFIX) -> Names:
    """A context manager (plain and async) under which ``NAME<suffix>`` reaches object
    ``NAME`` through ``host`` (see the module's documentation).

    Raises:
        UsageError: ``suffix`` is not a dot followed by a name.
    """
    return Names(host, suffix)


# -- the addresses of names ------------------------------------------------------------------


class _Addresses:
    """``NAME.suffix`` <-> an address of ``ADDRESS_BLOCK``, kept for the process's life."""

    def __init__(self, block: ipaddress.IPv4Network) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, str] = {}
        self._by_address: dict[str, str] = {}
        self._next = int(block.network_address) + 1
        self._end = int(block.broadcast_address)

    def address(self, hostname: str) -> str:
        """The address of ``hostname``, given it now if it had none.

        Raises:
            UsageError: every address of the block is taken.
        """
        key = hostname.rstrip(".").lower()
        with self._lock:
            address = self._by_name.get(key)
            if address is None:
                if self._next >= self._end:
                    raise UsageError(f"more than {len(self._by_name)} names resolved; no address left")
                address = str(ipaddress.IPv4Address(self._next))
                self._next += 1
                self._by_name[key] = address
                self._by_address[address] = key
            return address

    def hostname(self, address: str) -> str | None:
        return self._by_address.get(address)


_ADDRESSES = _Addresses(ADDRESS_BLOCK)


@dataclass(frozen=True, slots=True)
class _Match:
    binding: Names
    name: str  # the object's name
    hostname: str  # NAME.suffix


def _addrinfo(hostname: str, port: object, family: int, kind: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo``'s answer for a name.

    Raises:
        socket.gaierror: an IPv6-only request, or an unknown service name.
    """
    if family not in (0, socket.AF_INET):
        raise socket.gaierror(socket.EAI_FAMILY, f"{hostname} has an IPv4 address only")
    number = _port_number(port)
    return [
        (
            socket.AF_INET,
            socket.SocketKind(kind or SOCK_STREAM),
            socket.IPPROTO_TCP,
            "",
            (_ADDRESSES.address(hostname), number),
        )
    ]


def _port_number(port: object) -> int:
    """A port as given to ``getaddrinfo`` or ``create_connection``: a number, digits, or a
    service name.

    Raises:
        socket.gaierror: an unknown service name.
    """
    if port is None:
        return 0
    if isinstance(port, int):
        return port
    text = port.decode() if isinstance(port, bytes) else str(port)
    try:
        return int(text) if text.isdigit() else socket.getservbyname(text, "tcp")
    except OSError:
        raise socket.gaierror(socket.EAI_SERVICE, f"unknown service {text!r}") from None


# -- hooks ---------------------------------------------------------------------------------------

_MISSING = object()
_LOOP_METHODS = ("getaddrinfo", "create_connection", "sock_connect", "create_server", "start_tls")


class _LoopHooks:
    """The hooks on one event loop instance, and what they replaced."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.refs = 0
        self._saved: dict[str, object] = {}
        self._hooks: dict[str, object] = {}
        #: kernel sockets aiohttp "connected" to a name's address: (address, port) dialled
        self._claimed: weakref.WeakKeyDictionary[socket.socket, Address] = weakref.WeakKeyDictionary()

    def install(self) -> None:
        try:
            own = vars(self.loop)
        except TypeError:
            raise UsageError(f"{type(self.loop).__name__} cannot be hooked (no instance dict)") from None
        for method in _LOOP_METHODS:
            self._saved[method] = own.get(method, _MISSING)
            hook = getattr(self, "_" + method)(getattr(self.loop, method))
            self._hooks[method] = hook
            setattr(self.loop, method, hook)

    def uninstall(self) -> None:
        own = vars(self.loop)
        for method, hook in self._hooks.items():
            if own.get(method) is not hook:
                continue  # replaced by someone else since: theirs stays; ours passes through
            saved = self._saved[method]
            if saved is _MISSING:
                delattr(self.loop, method)
            else:
                setattr(self.loop, method, saved)

    def _match(self, host: object) -> _Match | None:
        return _REGISTRY.match(host, self.loop)

    def _getaddrinfo(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        async def getaddrinfo(
            host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
        ) -> Any:
            match = self._match(host)
            if match is None:
                return await original(host, port, family=family, type=type, proto=proto, flags=flags)
            return _addrinfo(match.hostname, port, family, type)

        return getaddrinfo

    def _create_connection(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        async def create_connection(
            protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
        ) -> Any:
            sock = kwargs.get("sock")
            dialled: Address | None = None
            if host is not None:
                match = self._match(host)
                dialled = (str(host), _port_number(port))
            elif sock is not None and (dialled := self._claimed.pop(sock, None)) is not None:
                match = self._match(dialled[0])
            else:
                match = None
            if match is None or dialled is None:
                return await original(protocol_factory, host, port, **kwargs)
            if kwargs.get("ssl"):
                raise UsageError(NO_TLS)
            if sock is not None:
                sock.close()  # never connected: the flow replaces it
            return await match.binding.open(protocol_factory, match.name, dialled)

        return create_connection

    def _sock_connect(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        async def sock_connect(sock: socket.socket, address: Any) -> None:
            if isinstance(address, tuple) and len(address) >= 2 and self._match(address[0]) is not None:
                self._claimed[sock] = (str(address[0]), _port_number(address[1]))
                return
            await original(sock, address)

        return sock_connect

    def _create_server(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        async def create_server(
            protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
        ) -> Any:
            match = self._match(host) if isinstance(host, str) else None
            if match is None:
                return await original(protocol_factory, host, port, **kwargs)
            if kwargs.get("ssl"):
                raise UsageError(NO_TLS)
            serving = match.binding.host
            return await serving.create_server(protocol_factory, match.name, port=_port_number(port))

        return create_server

    def _start_tls(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        async def start_tls(transport: Any, protocol: Any, sslcontext: Any, **kwargs: Any) -> Any:
            if isinstance(transport, StreamTransport):
                raise UsageError(NO_TLS)
            return await original(transport, protocol, sslcontext, **kwargs)

        return start_tls


class _Registry:
    """The active bindings and the hooks they installed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: active bindings, innermost last; replaced whole (hooks read it without the lock)
        self.bindings: tuple[Names, ...] = ()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopHooks] = {}
        self._saved_create_connection: Callable[..., socket.socket] | None = None

    def enter(self, binding: Names) -> None:
        loop = binding.host.loop
        with self._lock:
            if binding._loop is not None:
                raise UsageError(f"{binding!r} is already active")
            hooks = self._loops.get(loop)
            if hooks is None:
                hooks = _LoopHooks(loop)
                hooks.install()
                self._loops[loop] = hooks
            hooks.refs += 1
            if not self.bindings and socket.create_connection is not _create_connection:
                self._saved_create_connection = socket.create_connection
                socket.create_connection = _create_connection
            binding._loop = loop
            self.bindings = (*self.bindings, binding)

    def exit(self, binding: Names) -> None:
        with self._lock:
            loop = binding._loop
            if loop is None:
                return
            binding._loop = None
            self.bindings = tuple(b for b in self.bindings if b is not binding)
            hooks = self._loops[loop]
            hooks.refs -= 1
            if hooks.refs == 0:
                hooks.uninstall()
                del self._loops[loop]
            if not self.bindings and socket.create_connection is _create_connection:
                # (when something else replaced ours meanwhile, ours stays inside it and
                # passes everything through to what it saved)
                assert self._saved_create_connection is not None
                socket.create_connection = self._saved_create_connection

    def match(self, host: object, loop: asyncio.AbstractEventLoop | None = None) -> _Match | None:
        """The innermost active binding (on ``loop``, if given) for ``host``: a name, or the
        address a name resolved to."""
        bindings = self.bindings
        if not bindings:
            return None
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str):
            return None
        hostname = _ADDRESSES.hostname(host) or host
        for binding in reversed(bindings):
            if loop is not None and binding._loop is not loop:
                continue
            name = binding.object_name(hostname)
            if name is not None:
                return _Match(binding, name, hostname)
        return None

    def original_create_connection(self) -> Callable[..., socket.socket]:
        saved = self._saved_create_connection
        return saved if saved is not None else _STDLIB_CREATE_CONNECTION


_REGISTRY = _Registry()
_STDLIB_CREATE_CONNECTION = socket.create_connection


def _create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
    """``socket.create_connection`` under ``names``: a blocking ``scaffold.socket`` for a
    name, the replaced function (with the same arguments) for anything else."""
    match = _REGISTRY.match(address[0]) if isinstance(address, tuple) and address else None
    if match is None:
        return _REGISTRY.original_create_connection()(address, *args, **kwargs)
    timeout = args[0] if args else kwargs.get("timeout")
    # the stdlib's default is a private sentinel: the global default timeout then
    seconds = timeout if timeout is None or isinstance(timeout, int | float) else socket.getdefaulttimeout()
    if not args and "timeout" not in kwargs:
        seconds = socket.getdefaulttimeout()
    return match.binding.connect_blocking(match.name, (str(address[0]), _port_number(address[1])), seconds)
