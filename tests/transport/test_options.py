"""StreamOptions (scaffold.transport.options): one typed record, validated once."""

from __future__ import annotations

import math

import msgspec
import pytest

import scaffold
from scaffold.errors import UsageError
from scaffold.transport import StreamConnection, StreamOptions


def test_defaults_are_the_protocol_defaults() -> None:
    options = StreamOptions()
    assert (options.mss, options.initial_window, options.max_retries) == (1200, 10, 10)
    assert (options.initial_rto, options.min_rto, options.max_rto) == (1.0, 0.2, 4.0)
    assert (options.keepalive, options.idle_timeout, options.stall_probe) == (15.0, 60.0, 0.25)
    assert options.congestion == "newreno"
    assert scaffold.StreamOptions is StreamOptions


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mss", 0, "mss 0 is out of range"),
        ("mss", 70_000, "mss 70000 is out of range"),
        ("mss", 1200.0, "mss must be an integer"),
        ("recv_buffer", 2**32, "recv_buffer"),
        ("send_buffer", 0, "send_buffer"),
        ("max_retries", -1, "max_retries"),
        ("ack_every", 0, "ack_every"),
        ("initial_window", True, "initial_window must be an integer"),
        ("min_rto", 0.0, "min_rto must be a finite, positive number"),
        ("initial_rto", math.nan, "initial_rto"),
        ("idle_timeout", math.inf, "idle_timeout"),
        ("keepalive", -1.0, "keepalive"),
        ("stall_probe", "soon", "stall_probe must be a number"),
        ("ack_delay", -0.01, "ack_delay must be a finite, zero or positive"),
        ("congestion", "cubic", "congestion 'cubic' is not one of"),
    ],
)
def test_invalid_values_are_usage_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        StreamOptions(**{field: value})  # type: ignore[arg-type]


def test_rto_bounds_must_be_ordered() -> None:
    with pytest.raises(UsageError, match=r"min_rto 5\.0 is above max_rto 4\.0"):
        StreamOptions(min_rto=5.0)


def test_optional_timers_may_be_off() -> None:
    options = StreamOptions(keepalive=None, stall_probe=None, ack_delay=0, time_wait=0)
    assert options.keepalive is None and options.stall_probe is None


def test_frozen_replace_validates_and_round_trips() -> None:
    options = StreamOptions(send_buffer=4096)
    with pytest.raises(AttributeError):
        options.mss = 1400  # type: ignore[misc]
    assert msgspec.structs.replace(options, mss=1400).mss == 1400
    with pytest.raises(UsageError):
        msgspec.structs.replace(options, mss=-1)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(options), type=StreamOptions) == options


def test_a_dict_is_not_options() -> None:
    with pytest.raises(UsageError, match="must be a StreamOptions, not dict"):
        StreamConnection("client", 1, 0.0, {"send_buffer": 1000})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be a StreamOptions, not dict"):
        scaffold.HostStack("h", "gw", stream_options={"send_buffer": 1000})  # type: ignore[arg-type]
