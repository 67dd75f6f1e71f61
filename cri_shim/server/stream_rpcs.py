"""Exec, Attach and PortForward: each checks its object and answers a single-use URL on the
streaming server (cri_shim/streaming), where the client's connection does the work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri_shim.criapi import api_pb2 as pb
from cri_shim.streaming.server import validate_target
from cri_shim.streaming.targets import AttachTarget, ExecTarget, PortForwardTarget

if TYPE_CHECKING:
    from cri_shim.server.services import Services


class StreamRPCs:
    services: Services

    def Exec(self, request: pb.ExecRequest, context: object) -> pb.ExecResponse:
        target = ExecTarget(request.container_id, tuple(request.cmd), request.tty, request.stdin,
                            request.stdout, request.stderr)
        validate_target(target)
        server = self.services.streaming
        server.backend.check_container(request.container_id)
        return pb.ExecResponse(url=server.url_for(target))

    def Attach(self, request: pb.AttachRequest, context: object) -> pb.AttachResponse:
        target = AttachTarget(request.container_id, request.tty, request.stdin, request.stdout,
                              request.stderr)
        validate_target(target)
        server = self.services.streaming
        server.backend.check_container(request.container_id)
        return pb.AttachResponse(url=server.url_for(target))

    def PortForward(self, request: pb.PortForwardRequest, context: object) -> pb.PortForwardResponse:
        target = PortForwardTarget(request.pod_sandbox_id, tuple(request.port))
        validate_target(target)
        server = self.services.streaming
        server.backend.check_pod(request.pod_sandbox_id)
        return pb.PortForwardResponse(url=server.url_for(target))
