"""The Kubernetes channel protocols over WebSocket (sans-IO): one message per frame, its first
byte naming the channel.

    stdin 0, stdout 1, stderr 2, error 3, resize 4 (exec and attach)
    data 2n, error 2n+1 for the n-th port (port-forward)

`channel.k8s.io` and `v4.channel.k8s.io` are binary: the channel byte, then the data.
Their `base64.` variants are text: the channel as an ASCII digit, then the data in base64.
`v5.channel.k8s.io` adds a close signal: the two bytes 255, channel end that channel's
input (stdin's end of file). v4 and v5 report the result on the error channel as a JSON
Status object; the older ones write only an error's text there.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255


@dataclass(frozen=True)
class ChannelProtocol:
    name: str
    base64: bool = False
    status_json: bool = False
    close_signal: bool = False


V5 = ChannelProtocol("v5.channel.k8s.io", status_json=True, close_signal=True)
V4 = ChannelProtocol("v4.channel.k8s.io", status_json=True)
V4_BASE64 = ChannelProtocol("v4.base64.channel.k8s.io", base64=True, status_json=True)
V1 = ChannelProtocol("channel.k8s.io")
V1_BASE64 = ChannelProtocol("base64.channel.k8s.io", base64=True)
# What a client that names no subprotocol gets (the kubelet's "" entry)
UNNAMED = ChannelProtocol("")

REMOTE_COMMAND = (V5, V4, V4_BASE64, V1, V1_BASE64)
PORT_FORWARD = (V4, V4_BASE64, V1, V1_BASE64)


class ChannelError(ValueError):
    """A message that does not follow the negotiated channel protocol."""


def negotiate(offered: list[str], supported: tuple[ChannelProtocol, ...]) -> ChannelProtocol | None:
    """The first protocol in the client's order that we speak; UNNAMED when it offers none."""
    if not offered:
        return UNNAMED
    by_name = {p.name: p for p in supported}
    for name in offered:
        if name in by_name:
            return by_name[name]
    return None


@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClosed:
    channel: int


def encode(proto: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    """One WebSocket message (bytes: a binary frame, str: a text frame)."""
    if not 0 <= channel < CLOSE_SIGNAL:
        raise ValueError(f"channel {channel} out of range")
    if proto.base64:
        if channel > 9:
            raise ValueError(f"channel {channel} has no base64 form (one digit)")
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes((channel,)) + data


def decode(proto: ChannelProtocol, message: bytes | str) -> ChannelData | ChannelClosed | None:
    """What a client's message says; None for an empty message (ignored, as the kubelet does)."""
    if proto.base64:
        if isinstance(message, bytes):
            raise ChannelError(f"{proto.name}: binary message on a base64 (text) protocol")
        if not message:
            return None
        digit = message[0]
        if not "0" <= digit <= "9":
            raise ChannelError(f"{proto.name}: channel {digit!r} is not a digit")
        try:
            data = base64.b64decode(message[1:], validate=True)
        except (binascii.Error, ValueError) as e:
            raise ChannelError(f"{proto.name}: channel {digit}: bad base64: {e}") from None
        return ChannelData(int(digit), data)
    if isinstance(message, str):
        raise ChannelError(f"{proto.name or 'channel protocol'}: text message on a binary protocol")
    if not message:
        return None
    if message[0] == CLOSE_SIGNAL and proto.close_signal:
        if len(message) != 2:
            raise ChannelError(f"{proto.name}: a close signal names exactly one channel")
        return ChannelClosed(message[1])
    return ChannelData(message[0], bytes(message[1:]))
