"""A daemon with the busybox image pulled, and a pod helper, for container tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork
from tests.e2e.daemon import DaemonProcess

BACKENDS = ["runc", "crun", "pyrunc"]


@pytest.fixture
def cri(daemon_factory, test_network: PodNetwork, busybox_image: str) -> Iterator[DaemonProcess]:
    yield from serving_pods(daemon_factory, test_network, busybox_image)


def serving_pods(daemon_factory, network: PodNetwork, image: str,  # noqa: ANN001
                 extra_config: str = "") -> Iterator[DaemonProcess]:
    """A daemon on the test's network with `image` pulled (and `extra_config` in its config);
    its containers and pods are removed afterwards. For fixtures: `yield from serving_pods(...)`."""
    d = daemon_factory(extra_config + "\n" + network.config_toml() + busybox_image_config())
    d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
    yield d
    remove_all(d)


def remove_all(d: DaemonProcess) -> None:
    """Every container, then every pod, of a daemon that still runs."""
    if d.channel is None:
        return
    for c in d.runtime.ListContainers(pb.ListContainersRequest()).containers:
        d.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=c.id))
    for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
        d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))


def busybox_image_config() -> str:
    return ""


class Pod:
    def __init__(self, d: DaemonProcess, name: str, handler: str, log_dir: Path, image: str,
                 userns: pb.UserNamespace | None = None, pid: int = pb.CONTAINER) -> None:
        self.d, self.image = d, image
        self.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid=f"uid-{name}"),
            hostname=name, log_directory=str(log_dir))
        self.config.linux.security_context.namespace_options.pid = pid
        if userns is not None:
            self.config.linux.security_context.namespace_options.userns_options.CopyFrom(userns)
        self.id = d.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=self.config, runtime_handler=handler)).pod_sandbox_id

    def container_config(self, name: str, command: list[str], **kw) -> pb.ContainerConfig:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                 image=pb.ImageSpec(image=self.image), command=command,
                                 log_path=f"{name}/0.log")
        for k, v in kw.get("labels", {}).items():
            cfg.labels[k] = v
        if "memory" in kw:
            cfg.linux.resources.memory_limit_in_bytes = kw["memory"]
        return cfg

    def create(self, name: str, command: list[str], **kw) -> str:
        return self.d.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=self.id, config=self.container_config(name, command, **kw),
            sandbox_config=self.config)).container_id

    def run(self, name: str, command: list[str], **kw) -> str:
        cid = self.create(name, command, **kw)
        self.d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        return cid

    def status(self, cid: str) -> pb.ContainerStatus:
        return self.d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status

    def wait_state(self, cid: str, state: int, timeout: float = 20) -> pb.ContainerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(cid)
            if st.state == state:
                return st
            time.sleep(0.1)
        raise AssertionError(f"container {cid} never reached {state}: {st}")

    def exec(self, cid: str, cmd: list[str], timeout: int = 10) -> pb.ExecSyncResponse:
        return self.d.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout))


