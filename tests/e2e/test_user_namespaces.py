"""Issue 13 item 1 through the socket: pods with a user namespace of their own (Kubernetes
hostUsers: false), on the handler whose runtime does idmapped mounts (pyrunc), and the
failure cases on every handler."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.daemon import DaemonProcess
from tests.e2e.observe import mounts_under
from tests.e2e.pods import Pod

pytestmark = pytest.mark.root

HOST_BASE, SIZE = 300000, 65536


def userns(mode: int = pb.POD, uids: list[tuple[int, int, int]] | None = None,
           gids: list[tuple[int, int, int]] | None = None) -> pb.UserNamespace:
    """mappings as (container id, host id, length)"""
    default = [(0, HOST_BASE, SIZE)] if mode == pb.POD else []
    return pb.UserNamespace(
        mode=mode,
        uids=[pb.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in default if uids is None] + [
            pb.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in uids or []],
        gids=[pb.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in default if gids is None] + [
            pb.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in gids or []])


def run_pod_error(d: DaemonProcess, name: str, handler: str, ns: pb.UserNamespace,
                  **modes: int) -> grpc.RpcError:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid=f"uid-{name}"))
    cfg.linux.security_context.namespace_options.userns_options.CopyFrom(ns)
    for kind, mode in modes.items():
        setattr(cfg.linux.security_context.namespace_options, kind, mode)
    with pytest.raises(grpc.RpcError) as err:
        d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler))
    return err.value


NS_GET_USERNS = 0xB701


def owner_userns(ns_file: Path) -> int:
    """The inode of the user namespace owning a namespace (ioctl NS_GET_USERNS)."""
    fd = os.open(ns_file, os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            return os.fstat(owner).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def pods_dir(d: DaemonProcess) -> Path:
    return d.state_dir / "pods"


def wait_exit(pod: Pod, cid: str) -> pb.ContainerStatus:
    return pod.wait_state(cid, pb.CONTAINER_EXITED)


def test_user_namespaced_pod_on_pyrunc(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    d = cri
    status = d.runtime.Status(pb.StatusRequest())
    features = {h.name: h.features.user_namespaces for h in status.runtime_handlers}
    assert features["pyrunc"] and not features["runc"] and not features["crun"], features

    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "data").write_text("from the host\n")
    os.chown(vol / "data", 7, 8)
    pod = Pod(d, "userns", "pyrunc", tmp_path / "logs", busybox_image, userns=userns(), pid=pb.POD)
    pins = pods_dir(d) / pod.id / "ns"
    assert {"user", "net", "ipc", "uts"} <= {p.name for p in pins.iterdir()}

    cfg = pod.container_config("app", ["sh", "-c", "sleep 3600"])
    cfg.mounts.add(container_path="/vol", host_path=str(vol))
    cfg.linux.security_context.namespace_options.userns_options.CopyFrom(userns())
    cid = d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))

    def sh(script: str) -> str:
        r = pod.exec(cid, ["sh", "-c", script])
        assert r.exit_code == 0, (script, r.stderr)
        return r.stdout.decode()

    # the pod's mappings, root inside, and the pod's own user namespace (not the host's)
    assert sh("cat /proc/self/uid_map").split() == ["0", str(HOST_BASE), str(SIZE)]
    assert sh("cat /proc/self/gid_map").split() == ["0", str(HOST_BASE), str(SIZE)]
    assert sh("id -u; id -g").split() == ["0", "0"]
    assert sh("readlink /proc/self/ns/user").strip() != os.readlink("/proc/self/ns/user")
    # the image's files through idmapped layers: root's, as in the image; nothing chowned on disk
    assert sh("stat -c '%u:%g' / /bin/busybox /etc/passwd").split() == ["0:0"] * 3
    # the volume idmapped with the pod's mappings; the pod files too
    owners = sh("stat -c '%u:%g' /vol /vol/data /etc/hosts /etc/hostname").split()
    assert owners == ["0:0", "7:8", "0:0", "0:0"]
    assert sh("cat /vol/data") == "from the host\n"
    sh("echo from the pod > /vol/made; echo new > /rootfile; chown 5:6 /rootfile")
    made = (vol / "made").stat()
    assert (made.st_uid, made.st_gid) == (0, 0)  # the volume keeps its ids on disk
    uppers = list((d.root_dir / "rootfs").glob("*/upper/rootfile"))
    assert len(uppers) == 1
    st = uppers[0].stat()
    assert (st.st_uid, st.st_gid) == (HOST_BASE + 5, HOST_BASE + 6)  # the rootfs writes as the pod's ids
    # the pod's namespaces belong to its user namespace (so its root may use them)
    user_ino = os.stat(pins / "user").st_ino
    for kind in ("net", "ipc", "uts"):
        assert owner_userns(pins / kind) == user_ino, kind
    assert sh("hostname") == "userns\n"
    # a shared PID namespace made inside the user namespace: /proc shows the infra process
    assert "catatonit" in sh("cat /proc/1/comm")
    r = pod.exec(cid, ["sh", "-c", "mknod /tmp/null c 1 3"])
    assert r.exit_code != 0  # no device creation from a user namespace

    # a second container joins the same user namespace
    other = pod.run("other", ["sh", "-c", "readlink /proc/self/ns/user; cat /proc/self/uid_map"])
    wait_exit(pod, other)
    log = (tmp_path / "logs" / "other" / "0.log").read_text()
    assert sh("readlink /proc/self/ns/user").strip() in log
    assert f"{HOST_BASE}" in log

    # a restart of the daemon keeps the pod working
    d.restart()
    assert sh("cat /vol/data") == "from the host\n"
    third = pod.run("third", ["true"])
    assert wait_exit(pod, third).exit_code == 0

    for c in (cid, other, third):
        d.runtime.StopContainer(pb.StopContainerRequest(container_id=c, timeout=0))
        d.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=c))
    d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    # nothing left: no pins, no idmapped layer mounts, no rootfs
    assert mounts_under(d.state_dir) == [] and mounts_under(d.root_dir / "rootfs") == []
    assert not (pods_dir(d) / pod.id).exists()


def test_user_namespace_failures(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    d = cri

    def invalid(name: str, ns: pb.UserNamespace, words: str, handler: str = "pyrunc", **modes: int) -> None:
        e = run_pod_error(d, name, handler, ns, **modes)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert words in e.details(), e.details()

    two = [(0, HOST_BASE, SIZE), (SIZE, HOST_BASE + SIZE, SIZE)]
    invalid("two-mappings", userns(uids=two, gids=two), "exactly one mapping")
    invalid("no-root", userns(uids=[(1, HOST_BASE, SIZE)], gids=[(1, HOST_BASE, SIZE)]), "container id 0")
    invalid("no-gids", userns(gids=[]), "userns_options.gids")
    invalid("empty", userns(uids=[(0, HOST_BASE, 0)]), "at least 1")
    invalid("too-far", userns(uids=[(0, 4294967000, SIZE)]), "4294967294")
    invalid("container-mode", userns(pb.CONTAINER), "CONTAINER is not supported")
    invalid("target-mode", userns(pb.TARGET), "TARGET is not supported")
    invalid("node-mappings", userns(pb.NODE, uids=[(0, HOST_BASE, SIZE)]), "mode NODE takes no mappings")
    invalid("host-net", userns(), "node's network namespace", network=pb.NODE)
    invalid("host-pid", userns(), "node's pid namespace", pid=pb.NODE)
    for handler in ("runc", "crun"):
        e = run_pod_error(d, f"no-idmap-{handler}", handler, userns())
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        assert handler in e.details() and "user namespaces" in e.details(), e.details()
    assert d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert not pods_dir(d).exists() or list(pods_dir(d).iterdir()) == []

    # a container asking for another user namespace than its pod's
    pod = Pod(d, "mismatch", "pyrunc", tmp_path / "logs", busybox_image, userns=userns())
    cfg = pod.container_config("app", ["true"])
    cfg.linux.security_context.namespace_options.userns_options.mode = pb.NODE
    with pytest.raises(grpc.RpcError) as err:
        d.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg,
                                                            sandbox_config=pod.config))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "user namespace" in err.value.details()
    # NODE mode is a plain pod
    plain = Pod(d, "node-mode", "runc", tmp_path / "logs", busybox_image, userns=userns(pb.NODE))
    cid = plain.run("app", ["sh", "-c", "cat /proc/self/uid_map"])
    assert wait_exit(plain, cid).exit_code == 0
    assert (tmp_path / "logs" / "app" / "0.log").read_text().split()[-3:] == ["0", "0", "4294967295"]
    time.sleep(0)  # the fixture removes the pods
