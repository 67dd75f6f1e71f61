"""Batching of streamed lists: under the size, in order, nothing lost."""

from __future__ import annotations

from cri_shim.criapi import api_pb2 as pb
from cri_shim.server.list_batches import batches


def test_batches_keep_order_and_size() -> None:
    items = [pb.Container(id=f"{i:064x}", annotations={"a": "x" * 1000}) for i in range(100)]
    got = list(batches(items, limit=10_000))
    assert [c.id for b in got for c in b] == [c.id for c in items]
    assert all(sum(c.ByteSize() for c in b) <= 10_000 for b in got) and len(got) > 5
    assert list(batches([])) == []
    huge = pb.Container(id="h", annotations={"a": "x" * 50_000})
    assert list(batches([huge], limit=10_000)) == [[huge]]  # alone, never dropped
