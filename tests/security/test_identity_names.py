"""Names and forgetting, sans-IO: node names from one safe set everywhere, owned objects named
by owner/name, departed hosts forgotten after the retention period (docs/protocol.md §6.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaffold.core.controller import Controller
from scaffold.core.topology import default_topology
from scaffold.deploy.topology_file import load_topology
from scaffold.errors import ConfigError, UsageError
from scaffold.ids import ObjectId, check_node_name
from scaffold.wire import control

BAD_NAMES = ["../../x", "[/oops]", "a/b", "", ".hidden", "x" * 64, "café", "a b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_names_are_refused_by_topology_files_certificates_and_hello(name: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        check_node_name(name)
    topology = tmp_path / "net.toml"
    topology.write_text(f'name = "n"\n[[datacenter]]\nname = "dc1"\nhosts = [{name!r}]\n'.replace("'", '"'))
    with pytest.raises(ConfigError):
        load_topology(topology)
    ctl = Controller(default_topology())
    ctl.receive_message(name, control.Hello(name, "host", gateway="east-fs1"), 0.0)
    assert ctl.drops["hello-bad-name"] == 1 and name not in ctl.hosts


def test_owned_objects_are_named_by_owner_and_name() -> None:
    key = bytes(range(32))
    assert ObjectId.of(f"owner:{key.hex()}/photos") == ObjectId.from_owner(key, "photos")
    for bad in ("owner:abcd/photos", f"owner:{key.hex()}", f"owner:{key.hex()}/", "owner:zz/x"):
        with pytest.raises(UsageError):
            ObjectId.of(bad)


def test_departed_hosts_are_forgotten_after_the_retention_period() -> None:
    ctl = Controller(default_topology(), retention=10.0)
    ctl.receive_message("visitor", control.Hello("visitor", "host", gateway="east-fs1"), 0.0)
    ctl.receive_message("visitor", control.Bind(ObjectId.from_name("web").raw.hex()), 0.0)
    host_id = ctl.hosts["visitor"].host_id
    ctl.state_changes()
    ctl.node_disconnected("visitor", 1.0)
    ticks = [1.0 + 0.2 * k for k in range(56)]  # the controller's timer, on time, to 12.0 s
    for now in ticks[:45]:
        ctl.handle_timer(now)
    assert "visitor" in ctl.hosts  # dead, but within the retention period
    for now in ticks[45:]:
        ctl.handle_timer(now)
    assert "visitor" not in ctl.hosts and "east-h1" in ctl.hosts  # topology hosts stay
    assert all("visitor" not in replicas for replicas in ctl.objects.values())
    assert any(c.kind == "host" and c.key == "visitor" and c.record is None for c in ctl.state_changes())
    ctl.receive_message("later", control.Hello("later", "host", gateway="east-fs1"), 13.0)
    assert ctl.hosts["later"].host_id > host_id  # Host IDs are never reused
