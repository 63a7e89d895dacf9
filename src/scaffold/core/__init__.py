"""Sans-IO protocol engines: bytes, control records and ``now`` in; bytes, records, timers
and events out. No sockets, no asyncio and no clock reads live here (docs/architecture.md).
"""
