"""scaffold: SCAFFOLD, a service-centric network, in Python.

Clients name objects by flat Object IDs; the network resolves them by successive refinement
(Object ID -> DC ID -> Host ID -> Socket ID), picks a replica by hashing the Flow ID that
every packet carries (anycast with flow affinity, no per-flow state in switches), and
redirects flows when replicas, hosts or links change. See docs/architecture.md.
"""

from .api.datagram import DatagramEndpoint, DatagramPeer
from .api.host import Host, Server, create_connection
from .api.join import join
from .api.names import Names, names
from .api.sockets import SHUT_RD, SHUT_RDWR, SHUT_WR, SOCK_DGRAM, SOCK_STREAM, socket
from .api.streams import StreamReader, StreamWriter
from .api.testbed import Testbed
from .api.transport import FlowSocket, StreamTransport
from .core.controller import Controller
from .core.flow_switch import FlowSwitch
from .core.host import HostStack
from .core.object_switch import ObjectSwitch
from .core.topology import (
    DatacenterSpec,
    HostSpec,
    LinkSpec,
    ObjectSpec,
    Topology,
    default_topology,
    make_topology,
)
from .errors import (
    BrokenPathError,
    ConfigError,
    MalformedPacket,
    ObjectNotFound,
    PathError,
    ProtocolError,
    ScaffoldError,
    UsageError,
)
from .gateway import Ingress, Publisher, TargetUnavailable
from .ids import ObjectId
from .runtime.aio import EmbeddedNetwork
from .runtime.sim import SimNetwork
from .transport import StreamOptions

__version__ = "0.1.0"

__all__ = [
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOCK_DGRAM",
    "SOCK_STREAM",
    "BrokenPathError",
    "ConfigError",
    "Controller",
    "DatacenterSpec",
    "DatagramEndpoint",
    "DatagramPeer",
    "EmbeddedNetwork",
    "FlowSocket",
    "FlowSwitch",
    "Host",
    "HostSpec",
    "HostStack",
    "Ingress",
    "LinkSpec",
    "MalformedPacket",
    "Names",
    "ObjectId",
    "ObjectNotFound",
    "ObjectSpec",
    "ObjectSwitch",
    "PathError",
    "ProtocolError",
    "Publisher",
    "ScaffoldError",
    "Server",
    "SimNetwork",
    "StreamOptions",
    "StreamReader",
    "StreamTransport",
    "StreamWriter",
    "TargetUnavailable",
    "Testbed",
    "Topology",
    "UsageError",
    "__version__",
    "create_connection",
    "default_topology",
    "join",
    "make_topology",
    "names",
    "socket",
]
