"""The application API: asyncio streams and datagram endpoints bound on object names, and a
blocking API that mimics the ``socket`` module. Everything here drives a ``HostStack`` through
its ``NodeRuntime``; no protocol logic lives in this package."""
