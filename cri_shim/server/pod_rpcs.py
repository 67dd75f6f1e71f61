"""RunPodSandbox, Stop/Remove, Status, List, pod stats, UpdatePodSandboxResources, events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cri_shim import validation
from cri_shim.criapi import api_pb2 as pb

if TYPE_CHECKING:
    from cri_shim.daemon import Daemon
    from cri_shim.sandboxes.manager import SandboxManager


class PodRPCs:
    daemon: Daemon

    @property
    def _pods(self) -> SandboxManager:
        return self.daemon.sandboxes

    async def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: object
    ) -> pb.RunPodSandboxResponse:
        validation.run_pod_sandbox(request, self.daemon.config.cgroup_driver)
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

    async def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: object
    ) -> pb.PodSandboxStatusResponse:
        status, info = self._pods.status(request.pod_sandbox_id, request.verbose)
        resp = pb.PodSandboxStatusResponse(status=status, info=info)
        for c in self.daemon.containers.pod_containers(status.id):
            resp.containers_statuses.append(self.daemon.containers.status(c.meta.id)[0])
        resp.timestamp = time.time_ns()
        return resp

    async def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: object
    ) -> pb.ListPodSandboxResponse:
        f = request.filter if request.HasField("filter") else None
        return pb.ListPodSandboxResponse(items=self._pods.list(f))

    async def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: object
    ) -> pb.UpdatePodSandboxResourcesResponse:
        validation.update_pod_sandbox_resources(request)
        # The pod cgroup belongs to the kubelet (cgroupfs driver); we only check the pod exists.
        self._pods.get(request.pod_sandbox_id)
        return pb.UpdatePodSandboxResourcesResponse()

    async def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: object
    ) -> AsyncIterator[pb.ContainerEventResponse]:
        async for event in self.daemon.events.subscribe():
            yield event

    async def _pod_stats(self, pod_id: str) -> pb.PodSandboxStats:
        from cri_shim.containers.cgroup_stats import read_process_count
        from cri_shim.containers.manager import container_stats
        from cri_shim.containers.store import RUNNING
        from cri_shim.sandboxes import pod_stats

        sb = self._pods.get(pod_id)
        cfg = sb.config
        ts = pod_stats.now()
        out = pb.PodSandboxStats(attributes=pb.PodSandboxAttributes(
            id=sb.meta.id, metadata=cfg.metadata, labels=cfg.labels, annotations=cfg.annotations))
        containers = self.daemon.containers.pod_containers(sb.meta.id)
        cstats = [container_stats(self.daemon.containers, c) for c in containers]
        # The pod's cgroup also holds the infra process and conmon; pods made before the
        # infra process existed fall back to their containers' sum.
        usage = pod_stats.pod_cgroup_usage(sb.pod_cgroup, ts, self._pods.cpu_rates) if sb.pod_cgroup else None
        cpu, memory = usage or pod_stats.sum_containers(cstats, ts)
        out.linux.cpu.CopyFrom(cpu)
        out.linux.memory.CopyFrom(memory)
        out.linux.containers.extend(cstats)
        counts = [read_process_count(c.meta.cgroups_path) for c in containers
                  if c.status.state == RUNNING and c.meta.cgroups_path]
        out.linux.process.timestamp = ts
        out.linux.process.process_count.value = sum(n for n in counts if n)
        text = pod_stats.infra_net_dev(sb.status.infra_pid, sb.status.infra_start)
        netns = str(sb.pins().get("net", ""))
        if not text and netns:
            # No infra process to read through: a running container sees the same namespace.
            # Entering the pin costs a subprocess per poll, so only pods made before the infra
            # process existed do that.
            running = [c.status.pid for c in containers if c.status.state == RUNNING and c.status.pid]
            text = await pod_stats.read_net_dev("" if sb.meta.infra_cgroup else netns, running)
        network = pod_stats.network_usage(text, ts)
        if network is not None:
            out.linux.network.CopyFrom(network)
        return out

    async def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: object
    ) -> pb.PodSandboxStatsResponse:
        return pb.PodSandboxStatsResponse(stats=await self._pod_stats(request.pod_sandbox_id))

    async def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: object
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        out = []
        for sb in list(self._pods.sandboxes.values()):
            if f.id and not sb.meta.id.startswith(f.id):
                continue
            if f.label_selector and any(sb.config.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            out.append(await self._pod_stats(sb.meta.id))
        return pb.ListPodSandboxStatsResponse(stats=out)
