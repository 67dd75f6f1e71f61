"""ContainerStats and ListContainerStats: CPU and memory from the container's cgroup, the
writable layer from the image side (containerd: container_stats_list.go)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim.containers.store import RUNNING
from cri_shim.criapi import api_pb2 as pb
from cri_shim.id_lookup import labels_match
from cri_shim.stats.cgroups import Usage, read_usage

if TYPE_CHECKING:
    from cri_shim.containers.manager import Container, ContainerManager


def usage_messages(u: Usage, ts: int, nano_cores: int | None) -> tuple[pb.CpuUsage, pb.MemoryUsage]:
    """The CRI CPU and memory messages of one cgroup reading; fields the reading lacks stay unset."""
    cpu = pb.CpuUsage(timestamp=ts)
    mem = pb.MemoryUsage(timestamp=ts)
    for target, value in ((cpu.usage_core_nano_seconds, u.cpu_ns), (cpu.usage_nano_cores, nano_cores),
                          (mem.usage_bytes, u.memory_usage), (mem.working_set_bytes, u.working_set),
                          (mem.available_bytes, u.available), (mem.rss_bytes, u.rss),
                          (mem.page_faults, u.page_faults), (mem.major_page_faults, u.major_page_faults)):
        if value is not None:
            target.value = value
    return cpu, mem


def container_stats(m: ContainerManager, c: Container) -> pb.ContainerStats:
    """CPU and memory from the container's cgroup; the writable layer from the image side."""
    cfg = c.config
    ts = time.time_ns()
    st = pb.ContainerStats(attributes=pb.ContainerAttributes(
        id=c.meta.id, metadata=cfg.metadata, labels=cfg.labels, annotations=cfg.annotations))
    if c.status.state == RUNNING and c.meta.cgroups_path:
        u = read_usage(c.meta.cgroups_path)
        nano_cores = m.cpu_rates.rate(c.meta.id, ts, u.cpu_ns) if u.cpu_ns is not None else None
        cpu, mem = usage_messages(u, ts, nano_cores)
        st.cpu.CopyFrom(cpu)
        st.memory.CopyFrom(mem)
    usage = m.images.rootfs_usage(c.meta.id)
    if usage is not None:
        st.writable_layer.timestamp = ts
        st.writable_layer.fs_id.mountpoint = str(Path(m.config.root_dir))
        st.writable_layer.used_bytes.value = usage[0]
        st.writable_layer.inodes_used.value = usage[1]
    return st


def list_container_stats(m: ContainerManager, f: pb.ContainerStatsFilter) -> list[pb.ContainerStats]:
    out = []
    for c in m.containers.values():  # a snapshot (IdIndex.values)
        if f.id and not c.meta.id.startswith(f.id):
            continue
        if f.pod_sandbox_id and not c.meta.pod_id.startswith(f.pod_sandbox_id):
            continue
        if f.label_selector and not labels_match(c.config.labels, f.label_selector):
            continue
        out.append(container_stats(m, c))
    return out
