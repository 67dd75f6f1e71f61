"""ContainerStats and ListContainerStats: CPU and memory from the container's cgroup, the
writable layer from the image side (containerd: container_stats_list.go)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim.containers.store import RUNNING
from cri_shim.criapi import api_pb2 as pb
from cri_shim.id_lookup import labels_match
from cri_shim.stats.cgroups import read_usage

if TYPE_CHECKING:
    from cri_shim.containers.manager import Container, ContainerManager


def container_stats(m: ContainerManager, c: Container) -> pb.ContainerStats:
    """CPU and memory from the container's cgroup; the writable layer from the image side."""
    cfg = c.config
    ts = time.time_ns()
    st = pb.ContainerStats(attributes=pb.ContainerAttributes(
        id=c.meta.id, metadata=cfg.metadata, labels=cfg.labels, annotations=cfg.annotations))
    if c.status.state == RUNNING and c.meta.cgroups_path:
        u = read_usage(c.meta.cgroups_path)
        st.cpu.timestamp = ts
        if u.cpu_ns is not None:
            st.cpu.usage_core_nano_seconds.value = u.cpu_ns
        st.memory.timestamp = ts
        if u.cpu_ns is not None:
            nano_cores = m.cpu_rates.rate(c.meta.id, ts, u.cpu_ns)
            if nano_cores is not None:
                st.cpu.usage_nano_cores.value = nano_cores
        if u.working_set is not None:
            st.memory.working_set_bytes.value = u.working_set
        if u.available is not None:
            st.memory.available_bytes.value = u.available
        if u.memory_usage is not None:
            st.memory.usage_bytes.value = u.memory_usage
        if u.rss is not None:
            st.memory.rss_bytes.value = u.rss
        if u.page_faults is not None:
            st.memory.page_faults.value = u.page_faults
        if u.major_page_faults is not None:
            st.memory.major_page_faults.value = u.major_page_faults
    usage = m.images.rootfs_usage(c.meta.id)
    if usage is not None:
        st.writable_layer.timestamp = ts
        st.writable_layer.fs_id.mountpoint = str(Path(m.config.root_dir))
        st.writable_layer.used_bytes.value = usage[0]
        st.writable_layer.inodes_used.value = usage[1]
    return st


def list_container_stats(m: ContainerManager, f: pb.ContainerStatsFilter) -> list[pb.ContainerStats]:
    out = []
    for c in m.containers.values():
        if f.id and not c.meta.id.startswith(f.id):
            continue
        if f.pod_sandbox_id and not c.meta.pod_id.startswith(f.pod_sandbox_id):
            continue
        if f.label_selector and not labels_match(c.config.labels, f.label_selector):
            continue
        out.append(container_stats(m, c))
    return out
