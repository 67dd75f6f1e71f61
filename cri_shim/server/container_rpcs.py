"""CreateContainer, Start/Stop/Remove, List, Status, ExecSync, Update, ReopenContainerLog,
CheckpointContainer (cri_shim.containers.checkpoint); stats and metrics, computed in cri_shim.stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cri_shim import validation
from cri_shim.containers import checkpoint
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import Encoded, entry
from cri_shim.errors import InvalidArgument
from cri_shim.server.list_batches import batches
from cri_shim.stats import container as stats_container
from cri_shim.stats import metrics

if TYPE_CHECKING:
    from cri_shim.containers.manager import ContainerManager
    from cri_shim.server.services import Services


# ContainerStatusResponse.status, sent as the container's encoded Status view
STATUS_FIELD = pb.ContainerStatusResponse.DESCRIPTOR.fields_by_name["status"].number


class ContainerRPCs:
    services: Services

    @property
    def _containers(self) -> ContainerManager:
        return self.services.containers

    async def CreateContainer(
        self, request: pb.CreateContainerRequest, context: object
    ) -> pb.CreateContainerResponse:
        validation.create_container(request, self.services.config.cgroup_driver)
        cid = await self._containers.create(
            request.pod_sandbox_id, request.config,
            request.sandbox_config if request.HasField("sandbox_config") else None,
        )
        return pb.CreateContainerResponse(container_id=cid)

    async def StartContainer(
        self, request: pb.StartContainerRequest, context: object
    ) -> pb.StartContainerResponse:
        await self._containers.start_container(request.container_id)
        return pb.StartContainerResponse()

    async def StopContainer(
        self, request: pb.StopContainerRequest, context: object
    ) -> pb.StopContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument(f"StopContainer {request.container_id}: negative timeout {request.timeout}")
        await self._containers.stop_container(request.container_id, request.timeout)
        return pb.StopContainerResponse()

    async def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: object
    ) -> pb.RemoveContainerResponse:
        await self._containers.remove_container(request.container_id)
        return pb.RemoveContainerResponse()

    async def CheckpointContainer(
        self, request: pb.CheckpointContainerRequest, context: object
    ) -> pb.CheckpointContainerResponse:
        await checkpoint.checkpoint(self._containers, request.container_id, request.location)
        return pb.CheckpointContainerResponse()

    def ListContainers(
        self, request: pb.ListContainersRequest, context: object
    ) -> Encoded:
        f = request.filter if request.HasField("filter") else None
        return Encoded(pb.ListContainersResponse, self._containers.list_encoded(f))

    async def StreamContainers(
        self, request: pb.StreamContainersRequest, context: object
    ) -> AsyncIterator[pb.StreamContainersResponse]:
        f = request.filter if request.HasField("filter") else None
        for batch in batches(self._containers.list(f)):
            yield pb.StreamContainersResponse(containers=batch)

    def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: object
    ) -> pb.ContainerStatusResponse | Encoded:
        if request.verbose:
            status, info = self._containers.status(request.container_id, True)
            return pb.ContainerStatusResponse(status=status, info=info)
        return Encoded(pb.ContainerStatusResponse,
                       entry(STATUS_FIELD, self._containers.status_body(request.container_id)))

    async def ExecSync(self, request: pb.ExecSyncRequest, context: object) -> pb.ExecSyncResponse:
        validation.exec_sync(request)
        return await self._containers.exec_sync(request.container_id, list(request.cmd), request.timeout)

    async def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: object
    ) -> pb.UpdateContainerResourcesResponse:
        validation.update_container_resources(request)
        await self._containers.update_resources(request.container_id, request.linux)
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: object
    ) -> pb.ReopenContainerLogResponse:
        await self._containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    async def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: object
    ) -> pb.ContainerStatsResponse:
        c = self._containers.get(request.container_id)
        # cgroup files and a walk of the writable layer: off the event loop.
        stats = await asyncio.to_thread(stats_container.container_stats, self._containers, c)
        return pb.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: object
    ) -> pb.ListContainerStatsResponse:
        return pb.ListContainerStatsResponse(stats=await asyncio.to_thread(
            stats_container.list_container_stats, self._containers, request.filter))

    async def StreamContainerStats(
        self, request: pb.StreamContainerStatsRequest, context: object
    ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        stats = await asyncio.to_thread(stats_container.list_container_stats, self._containers,
                                        request.filter)
        for batch in batches(stats):
            yield pb.StreamContainerStatsResponse(container_stats=batch)

    def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: object
    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=metrics.descriptors())

    def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: object
    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=metrics.pod_sandbox_metrics(self._containers))

    async def StreamPodSandboxMetrics(
        self, request: pb.StreamPodSandboxMetricsRequest, context: object
    ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        for batch in batches(metrics.pod_sandbox_metrics(self._containers)):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=batch)
