"""Issue 14: a Prometheus scrape of a real daemon after a pod lifecycle."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.pods import Pod, busybox_image_config

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def val(got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return got[(name, frozenset(labels.items()))]


def test_scrape_after_a_pod_lifecycle(daemon_factory, tmp_path: Path, test_network: PodNetwork,  # noqa: F811
                                      busybox_image: str) -> None:
    port = free_port()
    d = daemon_factory(test_network.config_toml() + busybox_image_config()
                       + f'\n[metrics]\naddress = "127.0.0.1:{port}"\n')
    d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox_image)))
    pod = Pod(d, "metrics", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("box", ["sleep", "3600"])
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    running = scrape(port)
    assert running[("cri_shim_pods", frozenset({("state", "ready")}))] == 1
    assert running[("cri_shim_containers", frozenset({("state", "running")}))] == 1
    with pytest.raises(Exception):  # noqa: B017 - any RpcError: counted under its code
        d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="0" * 64))
    d.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2))
    d.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))

    got = scrape(port)
    for method in ("RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
                   "StopPodSandbox", "RemovePodSandbox", "PullImage"):
        assert val(got, "cri_shim_grpc_requests_total", method=method, code="OK") == 1, method
    assert val(got, "cri_shim_grpc_requests_total", method="ContainerStatus", code="NOT_FOUND") == 1
    assert val(got, "cri_shim_grpc_request_duration_seconds_count", method="RunPodSandbox") == 1
    assert got[("cri_shim_image_pulls_total", frozenset({("result", "success")}))] == 1
    assert got[("cri_shim_image_pull_bytes_total", frozenset())] > 100_000
    for verb in ("create", "start", "kill", "delete"):
        assert val(got, "cri_shim_runtime_operation_duration_seconds_count", handler="runc", verb=verb) >= 1
    assert not any(name == "cri_shim_pods" for name, _ in got)  # no pods left: no series
    assert got[("cri_shim_recovered_at_start", frozenset({("kind", "containers")}))] == 0
