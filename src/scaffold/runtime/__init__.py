"""Runtimes drive the sans-IO cores: ``sim`` (virtual clock) and ``aio`` (real UDP sockets)."""
