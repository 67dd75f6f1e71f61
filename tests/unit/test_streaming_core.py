"""The streaming server's pure parts: tokens, the WebSocket channel protocols, the Status
reported on the error stream, the resize stream's JSON."""

from __future__ import annotations

import json

import pytest

from cri_shim.streaming import channels
from cri_shim.streaming.channels import ChannelClosed, ChannelData, ChannelError
from cri_shim.streaming.status import CommandResult, parse_resize
from cri_shim.streaming.tokens import CacheFull, RequestCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_is_single_use_and_expires() -> None:
    clock = Clock()
    cache: RequestCache[str] = RequestCache(ttl=60, clock=clock)
    a, b = cache.insert("exec a"), cache.insert("exec b")
    assert a != b and len(a) >= 20
    assert cache.consume(a) == "exec a"
    assert cache.consume(a) is None  # used
    assert cache.consume("not-a-token") is None
    clock.now += 60.5
    assert cache.consume(b) is None  # expired
    assert len(cache) == 0


def test_full_cache_refuses_instead_of_evicting() -> None:
    clock = Clock()
    cache: RequestCache[int] = RequestCache(ttl=10, capacity=2, clock=clock)
    t1 = cache.insert(1)
    cache.insert(2)
    with pytest.raises(CacheFull, match="at most 2"):
        cache.insert(3)
    assert cache.consume(t1) == 1  # nobody's token was dropped
    cache.insert(3)
    clock.now += 11
    cache.insert(4)  # expired ones make room
    assert len(cache) == 1


def test_binary_channel_messages() -> None:
    assert channels.encode(channels.V4, channels.STDOUT, b"hi") == b"\x01hi"
    assert channels.decode(channels.V4, b"\x00input") == ChannelData(0, b"input")
    assert channels.decode(channels.V4, b"") is None
    # 255 is only a close signal in v5; before, it is just channel 255's data
    assert channels.decode(channels.V5, b"\xff\x00") == ChannelClosed(0)
    assert channels.decode(channels.V4, b"\xff\x00") == ChannelData(255, b"\x00")
    with pytest.raises(ChannelError, match="exactly one channel"):
        channels.decode(channels.V5, b"\xff\x00\x01")
    with pytest.raises(ChannelError, match="text message on a binary"):
        channels.decode(channels.V4, "1abc")


def test_base64_channel_messages() -> None:
    assert channels.encode(channels.V4_BASE64, channels.STDERR, b"\x00\xffok") == "2AP9vaw=="
    assert channels.decode(channels.V1_BASE64, "0aGVsbG8=") == ChannelData(0, b"hello")
    with pytest.raises(ChannelError, match="bad base64"):
        channels.decode(channels.V1_BASE64, "0***")
    with pytest.raises(ChannelError, match="not a digit"):
        channels.decode(channels.V1_BASE64, "xaGk=")
    with pytest.raises(ChannelError, match="binary message"):
        channels.decode(channels.V4_BASE64, b"\x00a")


def test_negotiation_follows_the_clients_order() -> None:
    offered = ["v4.channel.k8s.io", "v5.channel.k8s.io"]
    assert channels.negotiate(offered, channels.REMOTE_COMMAND) is channels.V4
    assert channels.negotiate(["v5.channel.k8s.io"], channels.REMOTE_COMMAND) is channels.V5
    assert channels.negotiate([], channels.REMOTE_COMMAND) is channels.UNNAMED
    assert channels.negotiate(["v9.channel.k8s.io"], channels.REMOTE_COMMAND) is None
    assert channels.negotiate(["v5.channel.k8s.io"], channels.PORT_FORWARD) is None


def test_status_objects() -> None:
    assert json.loads(CommandResult(0).status_json()) == {"metadata": {}, "status": "Success"}
    failed = json.loads(CommandResult(3, command=("sh", "-c", "exit 3")).status_json())
    assert failed["status"] == "Failure" and failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert "exit code 3" in failed["message"]
    internal = json.loads(CommandResult(None, error="container abc is not running").status_json())
    assert internal["reason"] == "InternalError" and internal["code"] == 500
    assert "container abc is not running" in internal["message"]
    # the older protocols: nothing on success, the message on failure
    assert CommandResult(0).for_protocol(False) == b""
    assert b"exit code 3" in CommandResult(3, command=("x",)).for_protocol(False)


def test_resize_stream_takes_whole_objects_only() -> None:
    buf = bytearray(b'{"Width":80,"Height":24}\n{"Width":100,')
    assert parse_resize(buf) == [(80, 24)]
    assert buf == bytearray(b'{"Width":100,')
    buf += b'"Height":30}'
    assert parse_resize(buf) == [(100, 30)]
    assert buf == bytearray()
    with pytest.raises(ValueError, match="bad size"):
        parse_resize(bytearray(b'{"Width":-1,"Height":2}'))
    with pytest.raises(ValueError, match="expected an object"):
        parse_resize(bytearray(b'[1,2]'))
