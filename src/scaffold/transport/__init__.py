"""Transport state machines, sans-IO (docs/architecture.md).

* ``stream`` -- the reliable, ordered, flow- and congestion-controlled byte stream.
"""
