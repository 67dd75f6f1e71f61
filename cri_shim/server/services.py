"""What the RPCs need from the daemon: its managers and settings, handed over as one small object
so the servers never see the `Daemon` (which builds this and starts the servers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cri_shim.config import Config
    from cri_shim.containers.manager import ContainerManager
    from cri_shim.event_bus import EventBus
    from cri_shim.imaging.manager import ImageManager
    from cri_shim.runtime_handlers import HandlerRegistry
    from cri_shim.sandboxes.manager import SandboxManager
    from cri_shim.streaming.server import StreamingServer
    from cri_shim.telemetry import Telemetry


@dataclass(frozen=True)
class Services:
    config: Config
    handlers: HandlerRegistry
    sandboxes: SandboxManager
    containers: ContainerManager
    images: ImageManager
    events: EventBus  # GetContainerEvents
    streaming: StreamingServer  # Exec, Attach and PortForward answer its URLs
    telemetry: Telemetry  # image pulls are counted where the RPC is answered
