"""Topology files: a network described in TOML, read into a ``Topology``.

A file names datacenters (flow switches, an object switch, hosts), backbone links between
datacenters (delay, loss, bandwidth) and objects with their replicas::

    name = "triangle"            # optional; names the running network
    local_delay_ms = 0           # optional; one-way delay of every link inside a datacenter

    [[datacenter]]
    name = "east"
    flow_switches = 2            # a count (east-fs1, east-fs2) or a list of names
    hosts = 4                    # a count, a list of names, or a list of {name, gateway}
    # object_switch = "east-os"  # the default

    [[link]]
    a = "east"
    b = "west"
    delay_ms = 4
    loss_percent = 0             # optional
    bandwidth = "100mbit"        # optional: bits/s as a number, or with kbit/mbit/gbit

    [[object]]
    name = "web"
    replicas = { "east-h1" = 1, "west-h1" = 3 }   # host = weight (or a list of host names)
    resumable = true             # optional: another replica may take over a stream (RESUME)
    policy = "nearest"           # optional: "nearest" (default) or "weighted" (protocol §3.5)
    capacity = { "east-h1" = 30 }  # optional: new flows/s a replica takes; its DC spills the rest

Hosts given by count or by name attach to the flow switches round-robin. A malformed file is
refused with ``ConfigError("FILE:LINE: reason")``: ``tomllib`` gives the line of a syntax
error; for a wrong value the line is found by locating the offending table and key in the
text (tomllib keeps no positions).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.topology import DatacenterSpec, HostSpec, LinkSpec, ObjectSpec, Topology
from ..errors import ConfigError
from .serve_spec import Service, format_serve

__all__ = ["TopologyFile", "dump_topology", "load_topology", "parse_bandwidth", "parse_topology"]

_TOP_KEYS = {"name", "local_delay_ms", "controller", "datacenter", "link", "object"}
_DC_KEYS = {"name", "flow_switches", "object_switch", "hosts"}
_LINK_KEYS = {"a", "b", "delay_ms", "loss_percent", "bandwidth"}
_OBJECT_KEYS = {"name", "replicas", "resumable", "allow", "policy", "capacity"}
_UNITS = {"": 1, "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "k": 10**3, "m": 10**6, "g": 10**9}
_BANDWIDTH = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_SYNTAX_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True, slots=True)
class TopologyFile:
    """A topology read from a file, with the network's name."""

    name: str
    topology: Topology
    path: str = ""


def parse_bandwidth(value: object) -> float:
    """Bits per second from a number or a text such as ``"100mbit"``.

    Raises:
        ConfigError: not a positive bandwidth.
    """
    if isinstance(value, bool):
        raise ConfigError(f"bandwidth must be a number or a text like '100mbit', got {value!r}")
    if isinstance(value, int | float):
        rate = float(value)
    elif isinstance(value, str) and (m := _BANDWIDTH.match(value.lower())) and m.group(2) in _UNITS:
        rate = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(f"bandwidth must be a number or a text like '100mbit', got {value!r}")
    if not 0 < rate < math.inf:
        raise ConfigError(f"bandwidth must be > 0, got {value!r}")
    return rate


def load_topology(path: str | Path) -> TopologyFile:
    """Read and check a topology file.

    Raises:
        ConfigError: the file cannot be read or is malformed (the message names the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the topology file: {exc.strerror or exc}") from None
    return parse_topology(text, str(path))


def parse_topology(text: str, source: str = "<topology>") -> TopologyFile:
    """Parse the text of a topology file (see the module docstring for the format).

    Raises:
        ConfigError: ``"SOURCE:LINE: reason"``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _SYNTAX_LINE.search(message)
        line = int(m.group(1)) if m else 1
        reason = _SYNTAX_LINE.sub("", message).strip()
        raise ConfigError(f"{source}:{line}: TOML syntax error: {reason}") from None
    return _Reader(text, source).read(data)


class _Reader:
    """Turns the parsed TOML into a ``Topology``; every error names a line of the text."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source
        self._dc_names: set[str] = set()
        #: (table name, index in its array of tables or -1) -> (first line, end line), 1-based
        self.tables: dict[tuple[str, int], tuple[int, int]] = {}
        counts: dict[str, int] = {}
        current: tuple[str, int] = ("", -1)
        start = 1
        for number, raw in enumerate(self.lines, 1):
            m = _HEADER.match(raw)
            if not m:
                continue
            self.tables[current] = (start, number - 1)
            name = m.group(2).strip().strip("\"'")
            if m.group(1) == "[[":
                index = counts.get(name, 0)
                counts[name] = index + 1
                current = (name, index)
            else:
                current = (name, -1)
            start = number
        self.tables[current] = (start, len(self.lines))

    # -- locating -----------------------------------------------------------------------

    def line_of(
        self, table: str = "", index: int = -1, key: str | None = None, value: str | None = None
    ) -> int:
        """The line of ``key`` (and, if given, of the text ``value`` after it) in a table."""
        first, last = self.tables.get((table, index), self.tables.get(("", -1), (1, len(self.lines))))
        if key is None:
            return first
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(first, last + 1):
            if pattern.match(self.lines[number - 1]):
                if value is None:
                    return number
                # the value may sit on a later line of a multi-line array or inline table
                for later in range(number, last + 1):
                    if value in self.lines[later - 1]:
                        return later
                return number
        return first

    def fail(self, line: int, reason: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line}: {reason}")

    # -- reading ------------------------------------------------------------------------

    def read(self, data: dict[str, Any]) -> TopologyFile:
        for key in data:
            if key not in _TOP_KEYS:
                raise self.fail(
                    self.line_of(key=key), f"unknown key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})"
                )
        name = self._text(data, "name", "", default="scaffold")
        controller = self._text(data, "controller", "", default="controller")
        local_delay = self._number(data, "local_delay_ms", "", -1, default=0.0) / 1000
        dcs_raw = data.get("datacenter", [])
        if not isinstance(dcs_raw, list) or not dcs_raw:
            raise self.fail(self.line_of(), "a topology needs at least one [[datacenter]] table")
        datacenters = [self._datacenter(i, raw) for i, raw in enumerate(dcs_raw)]
        nodes: dict[str, str] = {controller: "controller"}
        dc_index = {}
        for i, dc in enumerate(datacenters):
            if dc.name in dc_index:
                raise self.fail(
                    self.line_of("datacenter", i, "name"), f"datacenter {dc.name!r} is defined twice"
                )
            dc_index[dc.name] = i
            for node, role, key in (
                *((fs, "flow-switch", "flow_switches") for fs in dc.flow_switches),
                (dc.object_switch, "object-switch", "object_switch"),
                *((h.name, "host", "hosts") for h in dc.hosts),
            ):
                if node in nodes:
                    line = self.line_of("datacenter", i, key if key in dcs_raw[i] else "name", node)
                    raise self.fail(line, f"node name {node!r} is used twice")
                nodes[node] = role
        links = self._links(data.get("link", []), dc_index)
        self._dc_names = set(dc_index)
        objects = self._objects(data.get("object", []), nodes)
        try:
            topology = Topology(tuple(datacenters), tuple(links), tuple(objects), local_delay, controller)
        except ConfigError as exc:  # pragma: no cover - every rule is checked above with a line
            raise self.fail(1, str(exc)) from None
        return TopologyFile(name, topology, self.source)

    def _text(
        self, raw: dict[str, Any], key: str, table: str, index: int = -1, default: str | None = None
    ) -> str:
        value = raw.get(key, default)
        if value is None:
            raise self.fail(self.line_of(table, index), f"missing key {key!r}")
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise self.fail(
                self.line_of(table, index, key), f"{key} must be a name without spaces, got {value!r}"
            )
        return value

    def _number(
        self, raw: dict[str, Any], key: str, table: str, index: int, default: float, limit: float = math.inf
    ) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < limit:
            bound = f"< {limit:g}" if limit < math.inf else "finite"
            raise self.fail(
                self.line_of(table, index, key), f"{key} must be a number >= 0 and {bound}, got {value!r}"
            )
        return float(value)

    def _unknown(self, raw: dict[str, Any], known: set[str], table: str, index: int) -> None:
        for key in raw:
            if key not in known:
                raise self.fail(
                    self.line_of(table, index, key),
                    f"unknown key {key!r} in [[{table}]] (known: {', '.join(sorted(known))})",
                )

    def _datacenter(self, i: int, raw: object) -> DatacenterSpec:
        if not isinstance(raw, dict):  # pragma: no cover - tomllib makes [[x]] tables dicts
            raise self.fail(self.line_of("datacenter", i), "a datacenter must be a table")
        self._unknown(raw, _DC_KEYS, "datacenter", i)
        name = self._text(raw, "name", "datacenter", i)
        switches_raw = raw.get("flow_switches", 1)
        if isinstance(switches_raw, int) and not isinstance(switches_raw, bool):
            if not 1 <= switches_raw <= 1000:
                raise self.fail(
                    self.line_of("datacenter", i, "flow_switches"),
                    f"flow_switches must be between 1 and 1000, got {switches_raw}",
                )
            switches = tuple(f"{name}-fs{k}" for k in range(1, switches_raw + 1))
        else:
            switches = self._names(raw, "flow_switches", i)
            if not switches:
                raise self.fail(
                    self.line_of("datacenter", i, "flow_switches"), f"datacenter {name!r} has no flow switch"
                )
        object_switch = self._text(raw, "object_switch", "datacenter", i, default=f"{name}-os")
        hosts_raw = raw.get("hosts", 0)
        hosts: list[HostSpec] = []
        if isinstance(hosts_raw, int) and not isinstance(hosts_raw, bool):
            if not 0 <= hosts_raw <= 10000:
                raise self.fail(
                    self.line_of("datacenter", i, "hosts"),
                    f"hosts must be between 0 and 10000, got {hosts_raw}",
                )
            hosts = [
                HostSpec(f"{name}-h{k}", switches[(k - 1) % len(switches)]) for k in range(1, hosts_raw + 1)
            ]
        elif isinstance(hosts_raw, list):
            for k, entry in enumerate(hosts_raw):
                if isinstance(entry, str) and entry and not any(c.isspace() for c in entry):
                    hosts.append(HostSpec(entry, switches[k % len(switches)]))
                elif (
                    isinstance(entry, dict)
                    and set(entry) <= {"name", "gateway"}
                    and isinstance(entry.get("name"), str)
                ):
                    host = str(entry["name"])
                    gateway = entry.get("gateway", switches[k % len(switches)])
                    if gateway not in switches:
                        raise self.fail(
                            self.line_of("datacenter", i, "hosts", str(gateway)),
                            f"host {host!r}: gateway {gateway!r} is not a flow switch of datacenter {name!r}",
                        )
                    hosts.append(HostSpec(host, str(gateway)))
                else:
                    raise self.fail(
                        self.line_of("datacenter", i, "hosts"),
                        f"hosts[{k}] must be a host name or {{name = ..., gateway = ...}}, got {entry!r}",
                    )
        else:
            raise self.fail(
                self.line_of("datacenter", i, "hosts"), f"hosts must be a count or a list, got {hosts_raw!r}"
            )
        return DatacenterSpec(name, switches, object_switch, tuple(hosts))

    def _names(self, raw: dict[str, Any], key: str, i: int) -> tuple[str, ...]:
        value = raw[key]
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v and not any(c.isspace() for c in v) for v in value
        ):
            raise self.fail(
                self.line_of("datacenter", i, key), f"{key} must be a count or a list of names, got {value!r}"
            )
        return tuple(value)

    def _links(self, raw_links: object, dc_index: dict[str, int]) -> list[LinkSpec]:
        if not isinstance(raw_links, list):
            raise self.fail(self.line_of(key="link"), "links must be [[link]] tables")
        links: list[LinkSpec] = []
        seen: set[frozenset[str]] = set()
        for i, raw in enumerate(raw_links):
            if not isinstance(raw, dict):  # pragma: no cover
                raise self.fail(self.line_of("link", i), "a link must be a table")
            self._unknown(raw, _LINK_KEYS, "link", i)
            a = self._text(raw, "a", "link", i)
            b = self._text(raw, "b", "link", i)
            for key, end in (("a", a), ("b", b)):
                if end not in dc_index:
                    raise self.fail(self.line_of("link", i, key), f"link {a}-{b}: no datacenter {end!r}")
            if a == b:
                raise self.fail(self.line_of("link", i, "b"), f"link {a}-{b} joins a datacenter to itself")
            if frozenset((a, b)) in seen:
                raise self.fail(self.line_of("link", i), f"link {a}-{b} is defined twice")
            seen.add(frozenset((a, b)))
            delay = self._number(raw, "delay_ms", "link", i, default=0.0) / 1000
            loss = self._number(raw, "loss_percent", "link", i, default=0.0, limit=100) / 100
            bandwidth = None
            if "bandwidth" in raw:
                try:
                    bandwidth = parse_bandwidth(raw["bandwidth"])
                except ConfigError as exc:
                    raise self.fail(self.line_of("link", i, "bandwidth"), str(exc)) from None
            links.append(LinkSpec(a, b, delay, loss, bandwidth))
        return links

    def _objects(self, raw_objects: object, nodes: dict[str, str]) -> list[ObjectSpec]:
        if not isinstance(raw_objects, list):
            raise self.fail(self.line_of(key="object"), "objects must be [[object]] tables")
        objects: list[ObjectSpec] = []
        names: set[str] = set()
        for i, raw in enumerate(raw_objects):
            if not isinstance(raw, dict):  # pragma: no cover
                raise self.fail(self.line_of("object", i), "an object must be a table")
            self._unknown(raw, _OBJECT_KEYS, "object", i)
            name = self._text(raw, "name", "object", i)
            if name in names:
                raise self.fail(self.line_of("object", i, "name"), f"object {name!r} is defined twice")
            try:  # its replicas' daemons are told to serve it (netns/plan.py)
                format_serve(Service(name))
            except ConfigError as exc:
                raise self.fail(self.line_of("object", i, "name"), f"object {name!r}: {exc}") from None
            names.add(name)
            allow = raw.get("allow", [])
            if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
                raise self.fail(
                    self.line_of("object", i, "allow"), f"object {name!r}: allow must be a list of names"
                )
            replicas_raw = raw.get("replicas", [] if allow else None)
            if isinstance(replicas_raw, list) and all(isinstance(r, str) for r in replicas_raw):
                pairs: list[tuple[Any, Any]] = [(r, 1) for r in replicas_raw]
            elif isinstance(replicas_raw, dict):
                pairs = list(replicas_raw.items())
            else:
                raise self.fail(
                    self.line_of("object", i, "replicas") if "replicas" in raw else self.line_of("object", i),
                    f"object {name!r}: replicas must be {{host = weight, ...}} or a list of host names",
                )
            if not pairs and not allow:
                raise self.fail(self.line_of("object", i, "replicas"), f"object {name!r} has no replica")
            replicas: list[tuple[str, int]] = []
            for host, weight in pairs:
                if nodes.get(host) != "host":
                    raise self.fail(
                        self.line_of("object", i, "replicas", str(host)),
                        f"object {name!r}: replica {host!r} is not a host",
                    )
                if isinstance(weight, bool) or not isinstance(weight, int) or weight <= 0:
                    raise self.fail(
                        self.line_of("object", i, "replicas", str(host)),
                        f"object {name!r}: weight of {host!r} must be a whole number > 0, got {weight!r}",
                    )
                replicas.append((host, weight))
            resumable = raw.get("resumable", False)
            if not isinstance(resumable, bool):
                raise self.fail(
                    self.line_of("object", i, "resumable"),
                    f"resumable must be true or false, got {resumable!r}",
                )
            policy = raw.get("policy", "")
            if policy not in ("", "nearest", "weighted"):
                raise self.fail(
                    self.line_of("object", i, "policy"),
                    f'object {name!r}: policy must be "nearest" or "weighted", got {policy!r}',
                )
            capacity_raw = raw.get("capacity", {})
            if not isinstance(capacity_raw, dict):
                raise self.fail(
                    self.line_of("object", i, "capacity"),
                    f"object {name!r}: capacity must be {{replica = new flows per second, ...}}",
                )
            capacities: list[tuple[str, float]] = []
            for host, value in capacity_raw.items():
                if host not in dict(replicas):
                    raise self.fail(
                        self.line_of("object", i, "capacity", str(host)),
                        f"object {name!r}: capacity of {host!r}, which is not one of its replicas",
                    )
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1e9:
                    raise self.fail(
                        self.line_of("object", i, "capacity", str(host)),
                        f"object {name!r}: capacity of {host!r} must be a number of new flows per "
                        f"second > 0, got {value!r}",
                    )
                capacities.append((host, float(value)))
            for where in allow:
                if where != "*" and where not in nodes and where not in self._dc_names:
                    raise self.fail(
                        self.line_of("object", i, "allow"),
                        f"object {name!r}: allow {where!r} is not a host, datacenter or '*'",
                    )
            objects.append(
                ObjectSpec(name, tuple(replicas), resumable, tuple(allow), policy, tuple(capacities))
            )
        return objects


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_topology(topology: Topology, name: str = "scaffold") -> str:
    """The TOML text of a topology file that reads back as ``topology``."""
    out = [f"name = {_quote(name)}"]
    if topology.local_delay:
        out.append(f"local_delay_ms = {topology.local_delay * 1000!r}")
    if topology.controller != "controller":
        out.append(f"controller = {_quote(topology.controller)}")
    for dc in topology.datacenters:
        hosts = ", ".join(f"{{ name = {_quote(h.name)}, gateway = {_quote(h.gateway)} }}" for h in dc.hosts)
        out += [
            "",
            "[[datacenter]]",
            f"name = {_quote(dc.name)}",
            f"flow_switches = [{', '.join(_quote(f) for f in dc.flow_switches)}]",
            f"object_switch = {_quote(dc.object_switch)}",
            f"hosts = [{hosts}]",
        ]
    for link in topology.backbone:
        out += [
            "",
            "[[link]]",
            f"a = {_quote(link.a)}",
            f"b = {_quote(link.b)}",
            f"delay_ms = {link.delay * 1000!r}",
        ]
        if link.loss:
            out.append(f"loss_percent = {link.loss * 100!r}")
        if link.bandwidth is not None:
            out.append(f"bandwidth = {link.bandwidth!r}")
    for obj in topology.objects:
        replicas = ", ".join(f"{_quote(h)} = {w}" for h, w in obj.replicas)
        out += ["", "[[object]]", f"name = {_quote(obj.name)}", f"replicas = {{ {replicas} }}"]
        if obj.resumable:
            out.append("resumable = true")
        if obj.allow:
            out.append(f"allow = [{', '.join(_quote(a) for a in obj.allow)}]")
        if obj.policy:
            out.append(f"policy = {_quote(obj.policy)}")
        if obj.capacities:
            caps = ", ".join(f"{_quote(h)} = {c!r}" for h, c in obj.capacities)
            out.append(f"capacity = {{ {caps} }}")
    return "\n".join(out) + "\n"
