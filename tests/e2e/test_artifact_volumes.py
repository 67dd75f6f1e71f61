"""Issue 16 item 1: OCI artifacts (not runnable images) as image volumes, on every handler.

The artifacts are built here and pushed to the local registry: an OCI 1.1 manifest with
artifactType, the empty config and layers that are plain files (named by their title
annotation, or by their digest) and a tar+gzip layer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import BACKENDS, Pod
from tests.e2e.test_image_volumes import volume, volume_mounts, volume_mounts_gone
from tests.support.registry import Registry
from tests.support.testimages import OCI_LAYER_GZ, ArtifactFile, Layer, Pusher, TarBuilder, sha

pytestmark = pytest.mark.root

UNTITLED = b"no title: named by my digest\n"


@pytest.fixture(scope="module")
def artifact(registry: Registry) -> str:
    tree = TarBuilder().dir("tree").file("tree/inner.txt", b"from a tar layer\n") \
        .dir("tree/sub").file("tree/sub/deep.txt", b"deep\n").bytes()
    Pusher(registry.host).artifact("artifact-data", "v1", [
        ArtifactFile(b"hello from an artifact\n", "hello.txt", "text/plain"),
        ArtifactFile(b"key: value\n", "conf/app.yaml", "application/vnd.example.data.v1"),
        ArtifactFile(UNTITLED, None, "application/octet-stream"),
        ArtifactFile(b"#!/bin/sh\necho ran\n", "run.sh", "application/x-sh"),
        ArtifactFile(Layer(tree).blob, "tree.tar.gz", OCI_LAYER_GZ),
    ])
    return registry.image("artifact-data:v1")


def store(d: DaemonProcess) -> tuple[set[str], set[str], list[tuple[str, ...]]]:
    """Blobs, snapshot directories and rows of the layers table."""
    blobs = {p.name for p in (d.root_dir / "content" / "blobs" / "sha256").iterdir()}
    snaps = {p.name for p in (d.root_dir / "snapshots").iterdir()}
    db = sqlite3.connect(d.root_dir / "images.db")
    try:
        rows = sorted(db.execute("SELECT chain, n FROM layers").fetchall())
    finally:
        db.close()
    return blobs, snaps, rows


@pytest.mark.parametrize("handler", BACKENDS)
def test_artifact_volumes(cri: DaemonProcess, handler: str, tmp_path: Path, test_network: PodNetwork,  # noqa: F811
                          busybox_image: str, artifact: str) -> None:
    image_id = cri.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=artifact))).image_ref
    # reported as an image: the id is the manifest digest, with its size, tag and digest
    status = cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=artifact))).image
    assert status.id == image_id and status.size > 0 and not status.pinned
    assert list(status.repo_tags) == [artifact]
    assert list(status.repo_digests) == [f"{artifact.rsplit(':', 1)[0]}@{image_id}"]
    listed = cri.images.ListImages(pb.ListImagesRequest()).images
    assert image_id in [i.id for i in listed]

    pod = Pod(cri, f"art-{handler}", handler, tmp_path / "logs", busybox_image)

    def create(name: str, mounts: list[pb.Mount], image: str = busybox_image) -> str:
        cfg = pod.container_config(name, ["sleep", "3600"])
        cfg.image.image = image
        cfg.mounts.extend(mounts)
        return cri.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id

    # not runnable: refused as a container's own image, nothing created
    with pytest.raises(grpc.RpcError) as info:
        create("main", [], image=artifact)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert artifact in str(info.value.details()) and "OCI artifact" in str(info.value.details())
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []

    a = create("a", [volume("/art", artifact), volume("/tree", artifact, "tree")])
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=a))
    pod.wait_state(a, pb.CONTAINER_RUNNING)
    untitled = sha(UNTITLED)
    out = pod.exec(a, ["sh", "-c", f"cat /art/hello.txt /art/conf/app.yaml '/art/{untitled}' "
                                   "/art/tree/inner.txt /tree/sub/deep.txt; ls /tree; "
                                   "touch /art/new 2>&1; /art/run.sh 2>&1; echo rc=$?; "
                                   "grep ' /art ' /proc/mounts"]).stdout.decode()
    assert out.startswith("hello from an artifact\nkey: value\n" + UNTITLED.decode()
                          + "from a tar layer\ndeep\ninner.txt\nsub\n"), out
    assert "Read-only file system" in out  # ro
    assert "Permission denied" in out and "ran" not in out  # noexec
    art_mount = next(line for line in out.splitlines() if " /art " in line)
    assert all(f in art_mount.split()[3].split(",") for f in ("ro", "nosuid", "nodev", "noexec"))
    assert len(volume_mounts(cri)) == 1

    # sub-paths: a directory only, inside the artifact
    for sub, words in (("hello.txt", "not a directory"), ("nope", "does not exist"),
                       ("../x", "relative path inside")):
        with pytest.raises(grpc.RpcError) as info:
            create(f"bad-{len(sub)}", [volume("/x", artifact, sub)])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, sub
        assert words in str(info.value.details()) and repr(sub) in str(info.value.details())

    # in use: RemoveImage names the container; the kubelet's GC sees it pinned
    with pytest.raises(grpc.RpcError) as info:
        cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=artifact)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert a[:12] in str(info.value.details()) and "image volume" in str(info.value.details())
    assert cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=artifact))).image.pinned

    # a restart keeps it
    cri.restart()
    assert pod.exec(a, ["cat", "/art/hello.txt", "/tree/sub/deep.txt"]).stdout == \
        b"hello from an artifact\ndeep\n"
    assert len(volume_mounts(cri)) == 1

    # after the container, the artifact goes, blobs and snapshot with it
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=a, timeout=2))
    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=a))
    assert volume_mounts_gone(cri)
    cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=artifact)))
    assert image_id not in [i.id for i in cri.images.ListImages(pb.ListImagesRequest()).images]
    blobs, _, rows = store(cri)
    assert image_id.split(":")[1] not in blobs and untitled.split(":")[1] not in blobs
    assert not any(chain.startswith("artifact:") for chain, _ in rows)


def test_bad_artifacts_leave_nothing(daemon_factory, registry: Registry) -> None:
    d = daemon_factory()
    p = Pusher(registry.host)
    bad = {
        "artifact-bad/dotdot": ([ArtifactFile(b"x", "../escape.txt")], "'../escape.txt'"),
        "artifact-bad/absolute": ([ArtifactFile(b"x", "/etc/cron.d/x")], "absolute"),
        "artifact-bad/empty": ([ArtifactFile(b"x", "")], "is empty"),
        "artifact-bad/duplicate": ([ArtifactFile(b"x", "same"), ArtifactFile(b"y", "same")],
                                   "also the title of layer"),
        # fails after its blobs are stored: a "tar" layer that is not one
        "artifact-bad/not-a-tar": ([ArtifactFile(b"plain text, not a tar", "t.tar", OCI_LAYER_GZ)],
                                   "corrupt or truncated archive"),
    }
    before = store(d)
    for repo, (files, words) in bad.items():
        p.artifact(repo, "v1", files)
        with pytest.raises(grpc.RpcError) as info:
            d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=registry.image(f"{repo}:v1"))))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, repo
        details = str(info.value.details())
        assert words in details and sha(files[-1].data) in details, (repo, details)
        assert d.images.ListImages(pb.ListImagesRequest()).images == []
        assert store(d) == before, repo
