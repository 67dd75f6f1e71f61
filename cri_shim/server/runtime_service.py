"""runtime.v1.RuntimeService, assembled from one mixin per RPC family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri_shim.criapi import api_pb2_grpc
from cri_shim.server.container_rpcs import ContainerRPCs
from cri_shim.server.pod_rpcs import PodRPCs
from cri_shim.server.runtime_info import RuntimeInfoRPCs
from cri_shim.server.stream_rpcs import StreamRPCs
from cri_shim.server.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri_shim.server.services import Services


class RuntimeService(RuntimeInfoRPCs, PodRPCs, ContainerRPCs, StreamRPCs,
                     api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services


fill_unimplemented(RuntimeService, api_pb2_grpc.RuntimeServiceServicer, "RuntimeService")
