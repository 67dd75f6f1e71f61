"""PodSandboxStats: the pod's cgroup (or the sum of its containers) and its network's counters
(containerd: sandbox_stats_linux.go).

Everything here is read from /proc and cgroupfs without a subprocess (the kubelet polls), except
for pods made before the infra process existed, whose network is read by entering its pin.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim.containers.store import RUNNING
from cri_shim.criapi import api_pb2 as pb
from cri_shim.id_lookup import labels_match
from cri_shim.sandboxes import infra
from cri_shim.stats.cgroups import CGROUP_ROOT, read_process_count, read_usage
from cri_shim.stats.container import container_stats, usage_messages
from cri_shim.stats.rates import CpuRates

if TYPE_CHECKING:
    from cri_shim.containers.manager import Container, ContainerManager
    from cri_shim.sandboxes.manager import Sandbox, SandboxManager


def parse_net_dev(text: str) -> dict[str, tuple[int, int, int, int]]:
    """/proc/net/dev -> {iface: (rx_bytes, rx_errors, tx_bytes, tx_errors)}."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = rest.split()
        if len(f) >= 16:
            out[name.strip()] = (int(f[0]), int(f[2]), int(f[8]), int(f[10]))
    return out


def infra_net_dev(pid: int, start: int) -> str:
    """/proc/net/dev as the infra process sees it (the pod's network namespace, or the host's
    for a host-network pod); empty when that process is gone."""
    if pid <= 0:
        return ""
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return ""
    # Checked after reading: if the pid is that very process now, it was during the read.
    return text if infra.is_running(pid, start) else ""


async def read_net_dev(netns: str, pids: list[int]) -> str:
    """For pods without an infra process: a container's /proc/<pid>/net/dev, else enter the pin."""
    for pid in pids:
        try:
            return Path(f"/proc/{pid}/net/dev").read_text()
        except OSError:
            continue
    if not netns or not Path(netns).exists():
        return ""
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={netns}", "cat", "/proc/net/dev",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return out.decode() if proc.returncode == 0 else ""


def network_usage(text: str, ts: int) -> pb.NetworkUsage | None:
    counters = parse_net_dev(text)
    if not counters:
        return None
    usage = pb.NetworkUsage(timestamp=ts)
    for name, (rxb, rxe, txb, txe) in sorted(counters.items()):
        if name == "lo":
            continue
        iface = pb.NetworkInterfaceUsage(name=name)
        iface.rx_bytes.value, iface.rx_errors.value = rxb, rxe
        iface.tx_bytes.value, iface.tx_errors.value = txb, txe
        usage.interfaces.append(iface)
        if name == "eth0":
            usage.default_interface.CopyFrom(iface)
    return usage


def pod_cgroup_usage(cgroup: str, ts: int, rates: CpuRates | None = None, root: Path = CGROUP_ROOT
                     ) -> tuple[pb.CpuUsage, pb.MemoryUsage] | None:
    """CPU and memory of the pod's cgroup parent: containers, infra process and conmon alike."""
    u = read_usage(cgroup, root)
    if u.cpu_ns is None or u.memory_usage is None:
        return None
    nano_cores = rates.rate(cgroup, ts, u.cpu_ns) if rates is not None else None
    return usage_messages(u, ts, nano_cores)


def sum_containers(stats: list[pb.ContainerStats], ts: int) -> tuple[pb.CpuUsage, pb.MemoryUsage]:
    cpu = pb.CpuUsage(timestamp=ts)
    mem = pb.MemoryUsage(timestamp=ts)
    cpu.usage_core_nano_seconds.value = sum(s.cpu.usage_core_nano_seconds.value for s in stats)
    mem.working_set_bytes.value = sum(s.memory.working_set_bytes.value for s in stats)
    mem.usage_bytes.value = sum(s.memory.usage_bytes.value for s in stats)
    mem.rss_bytes.value = sum(s.memory.rss_bytes.value for s in stats)
    return cpu, mem


def now() -> int:
    return time.time_ns()


async def pod_sandbox_stats(pods: SandboxManager, containers: ContainerManager, pod_id: str
                            ) -> pb.PodSandboxStats:
    sb = pods.get(pod_id)
    members = containers.pod_containers(sb.meta.id)
    # cgroup files, the writable layers' disk usage and /proc: off the event loop.
    out, text = await asyncio.to_thread(_read_pod_stats, pods, containers, sb, members)
    netns = str(sb.pins().get("net", ""))
    if not text and netns:
        # No infra process to read through: a running container sees the same namespace.
        # Entering the pin costs a subprocess per poll, so only pods made before the infra
        # process existed do that.
        running = [c.status.pid for c in members if c.status.state == RUNNING and c.status.pid]
        text = await read_net_dev("" if sb.meta.infra_cgroup else netns, running)
    network = network_usage(text, out.linux.cpu.timestamp)
    if network is not None:
        out.linux.network.CopyFrom(network)
    return out


def _read_pod_stats(pods: SandboxManager, containers: ContainerManager, sb: Sandbox,
                    members: list[Container]) -> tuple[pb.PodSandboxStats, str]:
    """Everything of a pod's stats but a namespace-entering network read; and /proc/<infra>/net/dev."""
    cfg = sb.config
    ts = now()
    out = pb.PodSandboxStats(attributes=pb.PodSandboxAttributes(
        id=sb.meta.id, metadata=cfg.metadata, labels=cfg.labels, annotations=cfg.annotations))
    cstats = [container_stats(containers, c) for c in members]
    # The pod's cgroup also holds the infra process and conmon; pods made before the
    # infra process existed fall back to their containers' sum.
    usage = pod_cgroup_usage(sb.pod_cgroup, ts, pods.cpu_rates) if sb.pod_cgroup else None
    cpu, memory = usage or sum_containers(cstats, ts)
    out.linux.cpu.CopyFrom(cpu)
    out.linux.memory.CopyFrom(memory)
    out.linux.containers.extend(cstats)
    counts = [read_process_count(c.meta.cgroups_path) for c in members
              if c.status.state == RUNNING and c.meta.cgroups_path]
    out.linux.process.timestamp = ts
    out.linux.process.process_count.value = sum(n for n in counts if n)
    return out, infra_net_dev(sb.status.infra_pid, sb.status.infra_start)


async def list_pod_sandbox_stats(pods: SandboxManager, containers: ContainerManager,
                                 f: pb.PodSandboxStatsFilter) -> list[pb.PodSandboxStats]:
    out = []
    for sb in pods.sandboxes.values():
        if f.id and not sb.meta.id.startswith(f.id):
            continue
        if f.label_selector and not labels_match(sb.config.labels, f.label_selector):
            continue
        out.append(await pod_sandbox_stats(pods, containers, sb.meta.id))
    return out
