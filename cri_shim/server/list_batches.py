"""CRI list streaming (KEP-5825): the same listing as the unary List* calls, sent in batches
that stay well below gRPC's 16 MiB message limit however many objects there are."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# A batch's payload: a quarter of the limit leaves room for the envelope and for growth of an
# object between listing and sending.
BATCH_BYTES = 4 << 20


def batches(items: Iterable[M], limit: int = BATCH_BYTES) -> Iterator[list[M]]:
    """items in order, grouped so each group's encoded size stays under limit (an object
    larger than limit travels alone). Nothing at all: no batch."""
    batch: list[M] = []
    size = 0
    for item in items:
        n = item.ByteSize() + 8  # the field's tag and length prefix
        if batch and size + n > limit:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch
