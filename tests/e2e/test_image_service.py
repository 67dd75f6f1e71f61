"""Issue 4: the ImageService through the real socket against a real local registry."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import Pod
from tests.support.registry import Registry, start_registry, testimages

pytestmark = pytest.mark.root


def pull(d: DaemonProcess, ref: str, **auth: str) -> str:
    return d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref),
                                                  auth=pb.AuthConfig(**auth))).image_ref


def status(d: DaemonProcess, ref: str, verbose: bool = False) -> pb.ImageStatusResponse:
    return d.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=verbose))


def store_files(d: DaemonProcess) -> set[str]:
    """Every blob and committed snapshot in the daemon's image store."""
    root = d.root_dir
    blobs = {p.name for p in (root / "content" / "blobs" / "sha256").iterdir()}
    snaps = {p.name for p in (root / "snapshots").iterdir()}
    return {f"blob:{b}" for b in blobs} | {f"snap:{s}" for s in snaps}


@pytest.fixture
def images(daemon_factory) -> DaemonProcess:
    return daemon_factory()


def test_pull_by_tag_status_list_and_restart(images: DaemonProcess, registry: Registry) -> None:
    ref = registry.image("busybox:latest")
    image_id = pull(images, ref)
    assert image_id.startswith("sha256:")
    st = status(images, ref, verbose=True)
    assert st.image.id == image_id
    assert st.image.repo_tags == [ref]
    assert st.image.repo_digests == [f"{registry.host}/busybox@{registry.digests['busybox:latest']}"]
    assert st.image.size > 500_000
    info = json.loads(st.info["info"])
    assert info["imageSpec"]["config"]["Cmd"] == ["sh"]
    # Status by id, id prefix and digest reference find the same image.
    for other in (image_id, image_id[7:19], st.image.repo_digests[0]):
        assert status(images, other).image.id == image_id
    listed = images.images.ListImages(pb.ListImagesRequest()).images
    assert [i.id for i in listed] == [image_id]
    fs = images.images.ImageFsInfo(pb.ImageFsInfoRequest())
    assert fs.image_filesystems[0].used_bytes.value > 500_000
    assert fs.image_filesystems[0].inodes_used.value > 10
    images.restart()
    assert status(images, ref).image.id == image_id
    assert [i.id for i in images.images.ListImages(pb.ListImagesRequest()).images] == [image_id]


def test_missing_image_status_is_empty(images: DaemonProcess) -> None:
    st = status(images, "127.0.0.1:1/not/here:latest")
    assert not st.HasField("image")


def test_pull_by_digest_and_multiarch_index(images: DaemonProcess, registry: Registry) -> None:
    digest_ref = f"{registry.host}/busybox@{registry.digests['busybox:latest']}"
    image_id = pull(images, digest_ref)
    st = status(images, digest_ref).image
    assert st.id == image_id and st.repo_tags == []
    multi = pull(images, registry.image("busybox:multiarch"))
    # The index entry for this host points at the same manifest as busybox:latest.
    assert multi == image_id
    assert status(images, registry.image("busybox:multiarch")).image.id == image_id


def test_nonroot_user_and_filter(images: DaemonProcess, registry: Registry) -> None:
    a = pull(images, registry.image("busybox:latest"))
    b = pull(images, registry.image("busybox:nonroot"))
    assert status(images, registry.image("busybox:nonroot")).image.username == "app"
    got = images.images.ListImages(pb.ListImagesRequest(
        filter=pb.ImageFilter(image=pb.ImageSpec(image=registry.image("busybox:nonroot"))))).images
    assert [i.id for i in got] == [b]
    assert {i.id for i in images.images.ListImages(pb.ListImagesRequest()).images} == {a, b}


def test_remove_by_tag_id_and_gc(images: DaemonProcess, registry: Registry) -> None:
    ref = registry.image("busybox:latest")
    image_id = pull(images, ref)
    # A second tag for the same image: push the same manifest under another tag.
    p = testimages.Pusher(registry.host)
    code, _, body = p._req("GET", f"/v2/busybox/manifests/{registry.digests['busybox:latest']}",
                           headers={"Accept": testimages.OCI_MANIFEST})
    p.manifest("busybox", "second", body, testimages.OCI_MANIFEST)
    second = registry.image("busybox:second")
    assert pull(images, second) == image_id
    assert sorted(status(images, ref).image.repo_tags) == sorted([ref, second])
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=second)))
    assert status(images, ref).image.repo_tags == [ref]
    assert not status(images, second).HasField("image")
    assert store_files(images)
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
    assert not status(images, ref).HasField("image")
    assert store_files(images) == set()
    # Removing what is not there succeeds.
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="never/was:here")))


def test_shared_layers_survive_removal_of_one_image(images: DaemonProcess, registry: Registry) -> None:
    a = pull(images, registry.image("busybox:latest"))
    pull(images, registry.image("busybox:nonroot"))
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=registry.image("busybox:nonroot"))))
    assert status(images, a).image.id == a
    assert len([f for f in store_files(images) if f.startswith("snap:")]) == 2


@pytest.mark.parametrize(
    ("name", "code", "text"),
    [
        ("hostile/dotdot:latest", grpc.StatusCode.INVALID_ARGUMENT, "escapes the layer with '..'"),
        ("hostile/symlink:latest", grpc.StatusCode.INVALID_ARGUMENT, "goes through a symlink"),
        ("hostile/relsymlink:latest", grpc.StatusCode.INVALID_ARGUMENT, "goes through a symlink"),
        ("hostile/hardlink:latest", grpc.StatusCode.INVALID_ARGUMENT,
         "'/etc/shadow', which is not in the layer"),
        ("hostile/truncated:latest", grpc.StatusCode.INVALID_ARGUMENT, "corrupt or truncated"),
        ("does/not/exist:latest", grpc.StatusCode.NOT_FOUND, "not found"),
    ],
)
def test_bad_images_leave_nothing(images: DaemonProcess, registry: Registry, name: str,
                                  code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        pull(images, registry.image(name))
    assert exc.value.code() == code, exc.value.details()
    assert text in exc.value.details() and name.split(":")[0] in exc.value.details()
    assert store_files(images) == set()
    assert images.images.ListImages(pb.ListImagesRequest()).images == []
    for escaped in ("dotdot", "symlink", "relsymlink"):
        assert not Path(f"/tmp/cri-shim-escaped-{escaped}").exists()


def test_blob_not_matching_its_digest(images: DaemonProcess, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        digests = testimages.push_standard(reg.host)
        p = testimages.Pusher(reg.host)
        _, _, body = p._req("GET", f"/v2/busybox/manifests/{digests['busybox:latest']}",
                            headers={"Accept": testimages.OCI_MANIFEST})
        layer = json.loads(body)["layers"][1]["digest"]
        blob = reg.blob_path(layer)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # the registry serves it without checking
        blob.write_bytes(bytes(data))
        with pytest.raises(grpc.RpcError) as exc:
            pull(images, reg.image("busybox:latest"))
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"blob {layer}" in exc.value.details() and "has content with digest" in exc.value.details()
        assert store_files(images) == set()
    finally:
        reg.stop()


def test_registry_down(images: DaemonProcess) -> None:
    from tests.support.registry import free_port

    with pytest.raises(grpc.RpcError) as exc:
        pull(images, f"127.0.0.1:{free_port()}/busybox:latest")
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ConnectError" in exc.value.details()


def test_basic_auth(images: DaemonProcess, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "authreg", user="alice", password="s3cret")
    try:
        testimages.push_standard(reg.host, "alice", "s3cret")
        ref = reg.image("busybox:latest")
        for bad in ({}, {"username": "alice", "password": "wrong"}):
            with pytest.raises(grpc.RpcError) as exc:
                pull(images, ref, **bad)
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, exc.value.details()
            assert reg.host in exc.value.details()
        assert store_files(images) == set()
        assert pull(images, ref, username="alice", password="s3cret").startswith("sha256:")
        images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
        token = base64.b64encode(b"alice:s3cret").decode()
        assert pull(images, ref, auth=token).startswith("sha256:")
    finally:
        reg.stop()


def test_mirror_with_fallback(daemon_factory, registry: Registry, tmp_path: Path) -> None:
    from tests.support.registry import free_port

    mirror = start_registry(tmp_path / "mirror")
    try:
        testimages.push_standard(mirror.host)
        # The "upstream" is a loopback port nobody listens on: only the mirror can answer.
        upstream = f"127.0.0.1:{free_port()}"
        d = daemon_factory(f'[images]\nmirrors = {{"{upstream}" = ["http://{mirror.host}"]}}\n')
        image_id = pull(d, f"{upstream}/busybox:latest")
        assert status(d, f"{upstream}/busybox:latest").image.id == image_id
        # Not on the mirror: falls back to the upstream, which is down: both are named.
        with pytest.raises(grpc.RpcError) as exc:
            pull(d, f"{upstream}/busybox:missing")
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"http://{mirror.host}: HTTP 404" in exc.value.details() and upstream in exc.value.details()
    finally:
        mirror.stop()


def test_concurrent_pulls_fetch_each_blob_once(images: DaemonProcess, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        digests = testimages.push_standard(reg.host)
        ref = reg.image("busybox:latest")
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            ids = list(ex.map(lambda _: pull(images, ref), range(4)))
        assert len(set(ids)) == 1
        p = testimages.Pusher(reg.host)
        _, _, body = p._req("GET", f"/v2/busybox/manifests/{digests['busybox:latest']}",
                            headers={"Accept": testimages.OCI_MANIFEST})
        for layer in json.loads(body)["layers"]:
            assert reg.blob_gets(layer["digest"]) == 1, layer
    finally:
        reg.stop()


def test_image_in_use_cannot_be_removed(cri: DaemonProcess, busybox_image: str, tmp_path: Path) -> None:
    """A container's rootfs holds its image, across a restart too; once the container is
    removed the image can go."""
    d = cri
    pod = Pod(d, "in-use", "runc", tmp_path / "logs", busybox_image)
    cid = pod.create("app", ["sleep", "60"])
    image_id = d.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=busybox_image))).image.id
    d.restart()
    with pytest.raises(grpc.RpcError) as exc:
        d.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION and cid[:12] in exc.value.details()
    d.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    d.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))


def test_image_fs_info_follows_pulls_and_removals(images: DaemonProcess, registry: Registry) -> None:
    """ImageFsInfo walks each committed layer once (they never change) and forgets removed ones."""
    def usage() -> tuple[int, int]:
        fs = images.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]
        return fs.used_bytes.value, fs.inodes_used.value

    first = pull(images, registry.image("busybox:latest"))
    before = usage()
    assert usage() == before  # asked again: the same, from what it learned
    second = pull(images, registry.image("busybox:nonroot"))  # one more layer (and blobs)
    more = usage()
    assert more[0] > before[0] and more[1] > before[1]
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=second)))
    assert usage() == before
    images.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=first)))
    empty = usage()
    assert empty[0] < before[0] and empty[1] < before[1]
