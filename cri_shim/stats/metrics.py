"""cAdvisor-style container metrics for ListMetricDescriptors / ListPodSandboxMetrics.

Label values follow the order of each descriptor's label_keys; the kubelet turns
them into Prometheus series.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cri_shim.containers.store import RUNNING
from cri_shim.criapi import api_pb2 as pb
from cri_shim.stats.cgroups import Usage, read_usage

if TYPE_CHECKING:
    from cri_shim.containers.manager import ContainerManager

LABELS = ["container", "id", "image", "name", "namespace", "pod"]

# name -> (help, type, Usage attribute, scale)
METRICS: dict[str, tuple[str, int, str, float]] = {
    "container_cpu_usage_seconds_total": (
        "Cumulative cpu time consumed in seconds.", pb.COUNTER, "cpu_ns", 1e-9),
    "container_memory_usage_bytes": (
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        pb.GAUGE, "memory_usage", 1),
    "container_memory_working_set_bytes": ("Current working set in bytes.", pb.GAUGE, "working_set", 1),
    "container_memory_rss": ("Size of RSS in bytes.", pb.GAUGE, "rss", 1),
    "container_memory_failures_total": (
        "Cumulative count of memory allocation failures (page faults).", pb.COUNTER, "page_faults", 1),
}


def descriptors() -> list[pb.MetricDescriptor]:
    return [pb.MetricDescriptor(name=n, help=h, label_keys=LABELS) for n, (h, _, _, _) in METRICS.items()]


def container_metrics(container_id: str, cgroups_path: str, labels: list[str], ts: int,
                      usage: Usage | None = None) -> pb.ContainerMetrics:
    u = usage if usage is not None else read_usage(cgroups_path)
    out = pb.ContainerMetrics(container_id=container_id)
    for name, (_, kind, attr, scale) in METRICS.items():
        value = getattr(u, attr)
        if value is None:
            continue
        m = out.metrics.add(name=name, timestamp=ts, metric_type=kind, label_values=labels)
        m.value.value = int(value * scale)
    return out


def group_by_pod(items: Iterable[tuple[str, pb.ContainerMetrics]]) -> list[pb.PodSandboxMetrics]:
    pods: dict[str, pb.PodSandboxMetrics] = {}
    for pod_id, cm in items:
        pods.setdefault(pod_id, pb.PodSandboxMetrics(pod_sandbox_id=pod_id)).container_metrics.append(cm)
    return list(pods.values())


def pod_sandbox_metrics(containers: ContainerManager) -> list[pb.PodSandboxMetrics]:
    """ListPodSandboxMetrics: every running container's metrics, grouped by pod."""
    ts = time.time_ns()
    items = []
    for c in containers.containers.values():
        if c.status.state != RUNNING or not c.meta.cgroups_path:
            continue
        cfg = c.config
        labels = [
            c.meta.name, c.meta.cgroups_path, c.meta.image_ref, c.meta.id,
            cfg.labels.get("io.kubernetes.pod.namespace", ""),
            cfg.labels.get("io.kubernetes.pod.name", ""),
        ]
        items.append((c.meta.pod_id, container_metrics(c.meta.id, c.meta.cgroups_path, labels, ts)))
    return group_by_pod(items)
