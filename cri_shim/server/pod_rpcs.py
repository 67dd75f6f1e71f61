"""RunPodSandbox, Stop/Remove, Status, List, pod stats (computed in cri_shim.stats),
UpdatePodSandboxResources, events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cri_shim import validation
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import Encoded, entry, int_field
from cri_shim.server.list_batches import batches
from cri_shim.stats import pod as pod_stats

if TYPE_CHECKING:
    from cri_shim.sandboxes.manager import SandboxManager
    from cri_shim.server.services import Services


_FIELDS = pb.PodSandboxStatusResponse.DESCRIPTOR.fields_by_name
_STATUS, _CONTAINERS, _TIMESTAMP = (_FIELDS[f].number for f in ("status", "containers_statuses", "timestamp"))


class PodRPCs:
    services: Services

    @property
    def _pods(self) -> SandboxManager:
        return self.services.sandboxes

    async def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: object
    ) -> pb.RunPodSandboxResponse:
        validation.run_pod_sandbox(request, self.services.config.cgroup_driver)
        pod_id = await self._pods.run(request.config, request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    async def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: object
    ) -> pb.StopPodSandboxResponse:
        await self._pods.stop_sandbox(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: object
    ) -> pb.RemovePodSandboxResponse:
        await self._pods.remove_sandbox(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: object
    ) -> pb.PodSandboxStatusResponse | Encoded:
        containers = self.services.containers
        if request.verbose:
            status, info = self._pods.status(request.pod_sandbox_id, True)
            resp = pb.PodSandboxStatusResponse(status=status, info=info)
            for c in containers.pod_containers(status.id):
                resp.containers_statuses.append(containers.status(c.meta.id)[0])
            resp.timestamp = time.time_ns()
            return resp
        # the encoded views of the pod and its containers, and the time (cri_shim.encoded)
        pod_id, body = self._pods.status_body(request.pod_sandbox_id)
        parts = [entry(_STATUS, body)]
        parts.extend(entry(_CONTAINERS, b) for b in containers.pod_status_bodies(pod_id))
        parts.append(int_field(_TIMESTAMP, time.time_ns()))
        return Encoded(pb.PodSandboxStatusResponse, b"".join(parts))

    def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: object
    ) -> Encoded:
        f = request.filter if request.HasField("filter") else None
        return Encoded(pb.ListPodSandboxResponse, self._pods.list_encoded(f))

    async def StreamPodSandboxes(
        self, request: pb.StreamPodSandboxesRequest, context: object
    ) -> AsyncIterator[pb.StreamPodSandboxesResponse]:
        f = request.filter if request.HasField("filter") else None
        for batch in batches(self._pods.list(f)):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=batch)

    def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: object
    ) -> pb.UpdatePodSandboxResourcesResponse:
        validation.update_pod_sandbox_resources(request)
        # The pod cgroup belongs to the kubelet (cgroupfs driver); we only check the pod exists.
        self._pods.get(request.pod_sandbox_id)
        return pb.UpdatePodSandboxResourcesResponse()

    async def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: object
    ) -> AsyncIterator[pb.ContainerEventResponse]:
        async for event in self.services.events.subscribe():
            yield event

    async def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: object
    ) -> pb.PodSandboxStatsResponse:
        stats = await pod_stats.pod_sandbox_stats(self._pods, self.services.containers,
                                                  request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: object
    ) -> pb.ListPodSandboxStatsResponse:
        stats = await pod_stats.list_pod_sandbox_stats(self._pods, self.services.containers, request.filter)
        return pb.ListPodSandboxStatsResponse(stats=stats)

    async def StreamPodSandboxStats(
        self, request: pb.StreamPodSandboxStatsRequest, context: object
    ) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        stats = await pod_stats.list_pod_sandbox_stats(self._pods, self.services.containers, request.filter)
        for batch in batches(stats):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=batch)
