"""A failed teardown leaks nothing and forgets nothing.

A CNI plugin that cannot even be run (its interpreter is missing) fails RunPodSandbox's ADD and then
its DEL. The clean-up must still release everything else (namespace pins, /dev/shm,
the infra process, the bridge's IP), keep the pod's record while DEL is owed, and finish
the job on RemovePodSandbox or at the next start-up once the plugin works again.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork
from tests.e2e.daemon import DaemonProcess
from tests.e2e.observe import mounts_under

pytestmark = pytest.mark.root

BODY = "[ \"$CNI_COMMAND\" = ADD ] && echo '{\"cniVersion\": \"1.0.0\"}'\nexit 0\n"
BROKEN = "#!/nonexistent/csh-interpreter\n" + BODY  # executable, but exec fails with ENOENT
FIXED = "#!/bin/sh\n" + BODY


@pytest.fixture
def broken(daemon_factory, test_network: PodNetwork, tmp_path: Path):  # noqa: ANN201
    """A daemon whose network ends in a plugin that cannot be executed."""
    bin_dir = tmp_path / "cni-bin"
    bin_dir.mkdir()
    plugin = bin_dir / "csh-broken"
    plugin.write_text(BROKEN)
    plugin.chmod(0o755)
    conf = test_network.conf_dir / "10-test.conflist"
    doc = json.loads(conf.read_text())
    doc["plugins"].append({"type": "csh-broken"})
    conf.write_text(json.dumps(doc))
    d = daemon_factory(f'[cni]\nconf_dir = "{test_network.conf_dir}"\n'
                       f'bin_dirs = ["{bin_dir}", "/usr/lib/cni"]\ncache_dir = "{test_network.cache_dir}"\n')
    yield d, plugin, test_network
    plugin.write_text(FIXED)
    if d.channel is not None:
        for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))


def run_failing_pod(d: DaemonProcess) -> pb.PodSandbox:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="leaky", namespace="t", uid="u"),
                              hostname="leaky")
    with pytest.raises(grpc.RpcError) as exc:
        d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg))
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert "csh-broken" in exc.value.details() and "cannot run" in exc.value.details()
    pods = d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [p.metadata.name for p in pods] == ["leaky"]  # kept: its DEL is still owed
    assert pods[0].state == pb.SANDBOX_NOTREADY
    return pods[0]


def assert_released(d: DaemonProcess, net: PodNetwork) -> None:
    assert mounts_under(d.state_dir) == []
    assert net.allocated_ips() == []


def test_failed_teardown_keeps_the_record_until_remove_succeeds(broken) -> None:  # noqa: ANN001
    d, plugin, net = broken
    pod = run_failing_pod(d)
    assert_released(d, net)  # everything but the broken plugin's DEL was done
    with pytest.raises(grpc.RpcError) as exc:
        d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert exc.value.code() == grpc.StatusCode.INTERNAL and "csh-broken" in exc.value.details()
    assert [p.id for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [pod.id]
    plugin.write_text(FIXED)
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert not (Path(d.state_dir) / "pods" / pod.id).exists()
    assert_released(d, net)


def test_failed_teardown_is_finished_at_start_up(broken) -> None:  # noqa: ANN001
    d, plugin, net = broken
    pod = run_failing_pod(d)
    d.stop()
    d.start()  # still broken: start-up keeps the record and comes up all the same
    assert [p.id for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [pod.id]
    plugin.write_text(FIXED)
    d.stop()
    d.start()
    assert d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert not (Path(d.state_dir) / "pods" / pod.id).exists()
    assert_released(d, net)
    shutil.rmtree(Path(d.state_dir) / "pods", ignore_errors=True)


def test_rows_a_crash_kept_are_dropped_at_start(cri: DaemonProcess, busybox_image: str) -> None:
    """RemoveContainer deletes the rootfs row of its image without an fsync (the rootfs is gone
    by then); a crash can bring the row back. Start-up drops rows of containers that do not
    exist, rootfs and image-volume uses alike, and whatever rootfs directory is left, so
    the image is not held 'in use' by nobody."""
    d = cri
    image = d.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=busybox_image))).image
    ghost = "ab" * 32
    d.stop()
    db = sqlite3.connect(d.root_dir / "images.db")
    with db:
        db.execute("INSERT INTO snapshots VALUES (?, ?)", (ghost, image.id))
        db.execute("INSERT INTO snapshots VALUES (?, ?)", (f"{ghost}/image-volume/0", image.id))
    db.close()
    (d.root_dir / "rootfs" / ghost / "upper").mkdir(parents=True)
    d.start()
    assert not (d.root_dir / "rootfs" / ghost).exists()
    db = sqlite3.connect(d.root_dir / "images.db")
    assert db.execute("SELECT container FROM snapshots").fetchall() == []
    db.close()
    d.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image.id)))  # not in use
