"""What e2e tests look at from outside the daemon: mounts, and the event stream."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.daemon import DaemonProcess


def mounts_under(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path))]


class EventRecorder:
    """Collects GetContainerEvents in a background thread from the moment it is made."""

    def __init__(self, d: DaemonProcess) -> None:
        self.events: list[pb.ContainerEventResponse] = []
        self._stream = d.runtime.GetContainerEvents(pb.GetEventsRequest())
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)  # let the subscription reach the daemon before the test acts

    def _read(self) -> None:
        try:
            for ev in self._stream:
                self.events.append(ev)
        except grpc.RpcError:
            pass

    def kinds_for(self, object_id: str, until: int = pb.CONTAINER_DELETED_EVENT,
                  timeout: float = 5.0) -> list[int]:
        """Event types for one id, once `until` has arrived (or the timeout passed); stops the stream."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(
                e.container_id == object_id and e.container_event_type == until for e in self.events):
            time.sleep(0.05)
        self._stream.cancel()
        return [e.container_event_type for e in self.events if e.container_id == object_id]
