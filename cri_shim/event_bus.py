"""GetContainerEvents: a broadcaster of container and sandbox lifecycle events.

Each subscriber gets its own bounded queue; a subscriber that stops reading loses
the oldest events rather than slowing the runtime down (the kubelet relists anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cri_shim.criapi import api_pb2 as pb

QUEUE_SIZE = 1024


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[pb.ContainerEventResponse]] = set()

    def publish(self, event: pb.ContainerEventResponse) -> None:
        for q in list(self._subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[pb.ContainerEventResponse]:
        q: asyncio.Queue[pb.ContainerEventResponse] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.discard(q)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
