"""Answers already in wire form: the List calls join the cached encoding of each item's view,
the Status calls send their object's encoded view with what changes per call.

A ListContainers of 1,000 containers built 1,000 message copies and serialized them again on
every call (the kubelet relists every second); each container's entry of the repeated field
is now encoded once per state (containers/views.py, sandboxes/views.py) and the answer is the
concatenation, which is what the protobuf encoding of a repeated message field is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

M = TypeVar("M")


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def entry(number: int, body: bytes) -> bytes:
    """`body`, an encoded message, as field `number` (one entry if the field is repeated)."""
    return varint(number << 3 | 2) + varint(len(body)) + body


def field_entry(number: int, message: Any) -> bytes:
    """`message` as one entry of a length-delimited field `number` (a repeated message field)."""
    return entry(number, message.SerializeToString())


def int_field(number: int, value: int) -> bytes:
    """A non-negative integer field (int32, int64, uint64: varint wire type)."""
    return varint(number << 3) + varint(value)


# A record's view: (the metadata and the state key it was built from, the message, its encoding)
View = tuple[object, object, M, bytes]


def kept_view(current: View[M] | None, meta: object, key: object, build: Callable[[], M]) -> View[M]:
    """`current` while it was built from this `meta` (the same object) and an equal state `key`,
    else a new view of build()'s message and its encoding."""
    if current is not None and current[0] is meta and current[1] == key:
        return current
    msg = build()
    return (meta, key, msg, msg.SerializeToString())  # type: ignore[attr-defined]


class Encoded:
    """A response of `message_type` whose encoding is `data`. It serializes as that, so the
    built-in server sends it as it is; the grpcio fallback decodes it first (`decoded`)."""

    __slots__ = ("message_type", "data")

    def __init__(self, message_type: Any, data: bytes) -> None:
        self.message_type = message_type
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - the protobuf message method it stands in for
        return self.data

    def decoded(self) -> Any:
        return self.message_type.FromString(self.data)
