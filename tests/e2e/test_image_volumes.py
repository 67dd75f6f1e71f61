"""Issue 16 item 1: image volumes (KEP-4639) through the socket on every handler."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import BACKENDS, Pod
from tests.support.registry import Registry
from tests.support.testimages import Layer, Pusher, TarBuilder

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def data_image(registry: Registry) -> str:
    """A one-layer image that is only data: files, a relative and an absolute symlink."""
    layer = TarBuilder().dir("data").file("data/hello.txt", b"hello from an image\n") \
        .dir("data/sub").file("data/sub/tool", b"#!/bin/sh\necho ran\n", mode=0o755) \
        .symlink("inside", "data").symlink("escape", "/etc").bytes()
    Pusher(registry.host).image("volume-data", "v1", [Layer(layer)])
    return registry.image("volume-data:v1")


def volume(path: str, image: str, sub: str = "") -> pb.Mount:
    return pb.Mount(container_path=path, image=pb.ImageSpec(image=image), image_sub_path=sub, readonly=True)


def volume_mounts(d: DaemonProcess) -> list[str]:
    prefix = str(d.root_dir / "image-volumes")
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(prefix)]


def volume_mounts_gone(d: DaemonProcess, timeout: float = 5.0) -> bool:
    """Whether the image-volume mounts are all gone within timeout (they go with the last
    container using them, after its removal answers)."""
    deadline = time.monotonic() + timeout
    while volume_mounts(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    return volume_mounts(d) == []


@pytest.mark.parametrize("handler", BACKENDS)
def test_image_volumes(cri: DaemonProcess, handler: str, tmp_path: Path, test_network: PodNetwork,  # noqa: F811
                       busybox_image: str, data_image: str) -> None:
    cri.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=data_image)))
    pod = Pod(cri, f"vol-{handler}", handler, tmp_path / "logs", busybox_image)

    def create(name: str, mounts: list[pb.Mount]) -> str:
        cfg = pod.container_config(name, ["sleep", "3600"])
        cfg.mounts.extend(mounts)
        return cri.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id

    a = create("a", [volume("/data", data_image), volume("/sub", data_image, "data/sub"),
                     volume("/tools", busybox_image, "bin")])
    b = create("b", [volume("/data", data_image)])
    for cid in (a, b):
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        pod.wait_state(cid, pb.CONTAINER_RUNNING)
    got = pod.exec(a, ["sh", "-c", "cat /data/data/hello.txt; ls /sub; ls /tools | grep -c busybox; "
                                   "touch /data/new 2>&1; /sub/tool 2>&1; echo rc=$?; "
                                   "grep ' /data ' /proc/mounts"])
    out = got.stdout.decode()
    assert "hello from an image\n" in out and "tool\n" in out
    assert "Read-only file system" in out  # ro
    assert "Permission denied" in out and "ran" not in out  # noexec
    data_mount = next(line for line in out.splitlines() if " /data " in line)
    assert all(f in data_mount.split()[3].split(",") for f in ("ro", "nosuid", "nodev", "noexec"))
    # one mount per image, shared by the containers that use it
    assert len(volume_mounts(cri)) == 2
    assert pod.exec(b, ["cat", "/data/data/hello.txt"]).stdout == b"hello from an image\n"

    # in use: RemoveImage says by which container, the kubelet sees it pinned
    with pytest.raises(grpc.RpcError) as info:
        cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=data_image)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert a[:12] in str(info.value.details()) and "image volume" in str(info.value.details())
    status = cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=data_image))).image
    assert status.pinned

    # a restart keeps it working
    cri.restart()
    assert pod.exec(a, ["cat", "/data/data/hello.txt"]).stdout == b"hello from an image\n"
    assert len(volume_mounts(cri)) == 2

    # failure cases: refused up front, nothing left behind
    for sub, words in (("nope", "does not exist"), ("../etc", "relative path inside"),
                       ("/etc", "relative path inside"), ("escape", "outside the image")):
        with pytest.raises(grpc.RpcError) as info:
            create(f"bad-{len(sub)}", [volume("/x", data_image, sub)])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, sub
        assert words in str(info.value.details()), (sub, info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        create("missing", [volume("/x", "127.0.0.1:1/nothing:here")])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(volume_mounts(cri)) == 2

    # the mounts go with the last container using them; then the image can go
    for cid in (a, b):
        cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2))
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    assert volume_mounts_gone(cri)
    cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=data_image)))
