"""CreateContainer, Start/Stop/Remove, List, Status, ExecSync, Update, ReopenContainerLog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri_shim import validation
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument

if TYPE_CHECKING:
    from cri_shim.containers.manager import ContainerManager
    from cri_shim.daemon import Daemon


class ContainerRPCs:
    daemon: Daemon

    @property
    def _containers(self) -> ContainerManager:
        return self.daemon.containers

    async def CreateContainer(
        self, request: pb.CreateContainerRequest, context: object
    ) -> pb.CreateContainerResponse:
        validation.create_container(request, self.daemon.config.cgroup_driver)
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

    async def ListContainers(
        self, request: pb.ListContainersRequest, context: object
    ) -> pb.ListContainersResponse:
        f = request.filter if request.HasField("filter") else None
        return pb.ListContainersResponse(containers=self._containers.list(f))

    async def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: object
    ) -> pb.ContainerStatusResponse:
        status, info = self._containers.status(request.container_id, request.verbose)
        return pb.ContainerStatusResponse(status=status, info=info)

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
        from cri_shim.containers.manager import container_stats

        c = self._containers.get(request.container_id)
        return pb.ContainerStatsResponse(stats=container_stats(self._containers, c))

    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: object
    ) -> pb.ListContainerStatsResponse:
        from cri_shim.containers.manager import container_stats

        f = request.filter
        out = []
        for c in list(self._containers.containers.values()):
            if f.id and not c.meta.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not c.meta.pod_id.startswith(f.pod_sandbox_id):
                continue
            if f.label_selector and any(c.config.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            out.append(container_stats(self._containers, c))
        return pb.ListContainerStatsResponse(stats=out)

    async def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: object
    ) -> pb.ListMetricDescriptorsResponse:
        from cri_shim.containers import metrics

        return pb.ListMetricDescriptorsResponse(descriptors=metrics.descriptors())

    async def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: object
    ) -> pb.ListPodSandboxMetricsResponse:
        import time

        from cri_shim.containers import metrics
        from cri_shim.containers.store import RUNNING

        ts = time.time_ns()
        items = []
        for c in list(self._containers.containers.values()):
            if c.status.state != RUNNING or not c.meta.cgroups_path:
                continue
            cfg = c.config
            labels = [
                c.meta.name, c.meta.cgroups_path, c.meta.image_ref, c.meta.id,
                cfg.labels.get("io.kubernetes.pod.namespace", ""),
                cfg.labels.get("io.kubernetes.pod.name", ""),
            ]
            cm = metrics.container_metrics(c.meta.id, c.meta.cgroups_path, labels, ts)
            items.append((c.meta.pod_id, cm))
        return pb.ListPodSandboxMetricsResponse(pod_metrics=metrics.group_by_pod(items))
