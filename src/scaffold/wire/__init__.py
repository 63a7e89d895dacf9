"""Wire formats, one module per format (docs/protocol.md).

* ``header``   -- the SCAFFOLD header every data-plane packet starts with.
* ``datagram`` -- the datagram transport segment (proto 1).
* ``stream``   -- the reliable stream transport segment (proto 2).
* ``signal``   -- messages the network itself sends to hosts (proto 3).
* ``control``  -- typed control-plane records and their stream framing.
"""
