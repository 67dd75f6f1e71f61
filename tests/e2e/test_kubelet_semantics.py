"""What the kubelet and critest expect of a runtime, beyond the basic lifecycle.

Each test drives the real socket and checks what a process inside the container sees:
hostnames, groups, capabilities, oom_score_adj, exec time-outs, log reopening,
recursive read-only mounts and concurrent calls on one object.
"""

from __future__ import annotations

import ctypes
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from cri_shim.containers.host_limits import capabilities_from_mask, parse_status
from cri_shim.criapi import api_pb2 as pb
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import BACKENDS, Pod

pytestmark = pytest.mark.root


def output(pod: Pod, cid: str, cmd: list[str]) -> str:
    r = pod.exec(cid, cmd)
    assert r.exit_code == 0, r.stderr
    return r.stdout.decode()


def test_pod_without_hostname_gets_the_nodes(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    name = "a-pod-name-that-is-much-longer-than-any-hostname-may-be-" + "x" * 20
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid="long"),
                              log_directory=str(tmp_path / "logs"))
    pod_id = cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    pod = Pod.__new__(Pod)
    pod.d, pod.image, pod.config, pod.id = cri, busybox_image, cfg, pod_id
    cid = pod.run("h", ["sleep", "60"])
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    assert output(pod, cid, ["hostname"]).strip() == socket.gethostname()


@pytest.mark.parametrize("handler", BACKENDS)
@pytest.mark.parametrize(("policy", "expected"), [(pb.Merge, [1000, 1234, 2000]), (pb.Strict, [1000, 1234])])
def test_groups_include_the_primary_gid(cri: DaemonProcess, tmp_path: Path, busybox_image: str,
                                        handler: str, policy: int, expected: list[int]) -> None:
    pod = Pod(cri, f"groups-{handler}-{policy}", handler, tmp_path / "logs", busybox_image)
    cfg = pod.container_config("ids", ["sh", "-c", "id -G; sleep 60"])
    sc = cfg.linux.security_context
    sc.run_as_user.value = 1000
    sc.supplemental_groups.append(1234)
    sc.supplemental_groups_policy = policy
    cid = cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = pod.wait_state(cid, pb.CONTAINER_RUNNING)
    assert (st.user.linux.uid, st.user.linux.gid) == (1000, 1000)
    assert sorted(st.user.linux.supplemental_groups) == expected
    want = " ".join(map(str, expected)) + "\n"
    assert output(pod, cid, ["id", "-G"]) == want
    log = tmp_path / "logs" / "ids" / "0.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.1)
    assert log.read_text().split(" ", 3)[3] == want


def test_run_as_group_without_user_is_refused(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, "rag", "runc", tmp_path / "logs", busybox_image)
    cfg = pod.container_config("rag", ["true"])
    cfg.linux.security_context.run_as_group.value = 1002
    with pytest.raises(grpc.RpcError) as exc:
        cri.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run_as_group 1002 is set without run_as_user" in exc.value.details()
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []


def own_capabilities() -> list[str]:
    return list(capabilities_from_mask(parse_status(Path("/proc/self/status").read_text())["CapBnd"]))


@pytest.mark.parametrize("handler", BACKENDS)
@pytest.mark.parametrize("how", ["privileged", "add-all"])
def test_all_capabilities_are_the_daemons(cri: DaemonProcess, tmp_path: Path, busybox_image: str,
                                          handler: str, how: str) -> None:
    pod = Pod(cri, f"caps-{handler}-{how}", handler, tmp_path / "logs", busybox_image)
    cfg = pod.container_config("caps", ["sleep", "60"])
    if how == "privileged":
        cfg.linux.security_context.privileged = True
    else:
        cfg.linux.security_context.capabilities.add_capabilities.append("ALL")
    started = time.monotonic()
    cid = cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert time.monotonic() - started < 10
    status = parse_status(output(pod, cid, ["cat", "/proc/1/status"]))
    assert list(capabilities_from_mask(status["CapEff"])) == own_capabilities()


@pytest.mark.parametrize("handler", BACKENDS)
def test_guaranteed_pod_oom_score_adj_is_clamped(cri: DaemonProcess, tmp_path: Path, busybox_image: str,
                                                 handler: str) -> None:
    """The kubelet asks -997 for Guaranteed pods; a daemon that may not go that low uses its floor."""
    pod = Pod(cri, f"oom-{handler}", handler, tmp_path / "logs", busybox_image)
    cfg = pod.container_config("g", ["sleep", "60"])
    cfg.linux.resources.oom_score_adj = -997
    cid = cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    caps = own_capabilities()
    floor = -997 if "CAP_SYS_RESOURCE" in caps else int(Path("/proc/self/oom_score_adj").read_text())
    # The daemon was started by this test process, so it has the same floor.
    assert int(output(pod, cid, ["cat", "/proc/1/oom_score_adj"])) == max(-997, floor)


def test_exec_timeout_kills_the_process(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, "exec-timeout", "runc", tmp_path / "logs", busybox_image)
    # tail never reaps: a process orphaned into this container would stay as a zombie.
    cid = pod.run("c", ["tail", "-f", "/dev/null"])
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    with pytest.raises(grpc.RpcError) as exc:
        pod.exec(cid, ["sh", "-c", "sleep 600; echo never"], timeout=1)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    left = [line for line in output(pod, cid, ["ps"]).splitlines() if "sleep" in line]
    assert left == []


def test_exec_output_is_truncated_not_refused(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, "exec-big", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("c", ["sleep", "600"])
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    r = pod.exec(cid, ["sh", "-c", "head -c 100000000 /dev/zero; head -c 100000000 /dev/zero >&2"],
                 timeout=60)
    assert r.exit_code == 0
    assert len(r.stdout) + len(r.stderr) <= (16 << 20) - 4096
    assert r.stdout.endswith(b"[cri-shim: output truncated at 15 MiB]\n")
    assert r.stdout.count(b"\0") + r.stderr.count(b"\0") == 15 << 20


def test_reopen_log_creates_the_new_file_before_returning(cri: DaemonProcess, tmp_path: Path,
                                                          busybox_image: str) -> None:
    pod = Pod(cri, "reopen", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("c", ["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    log = tmp_path / "logs" / "c" / "0.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (log.exists() and log.stat().st_size):
        time.sleep(0.05)
    log.rename(log.with_suffix(".old"))
    cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    assert log.exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "tick" not in log.read_text():
        time.sleep(0.05)
    assert " stdout F tick" in log.read_text()


def test_concurrent_remove_image(cri: DaemonProcess, registry) -> None:  # noqa: ANN001
    ref = registry.image("busybox:nonroot")
    cri.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref))),
            range(8)))
    assert len(results) == 8
    st = cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)))
    assert not st.HasField("image")


def test_concurrent_remove_container_and_pod(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, "conc", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("c", ["sleep", "600"])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid)),
                      range(4)))
        remove_pod = pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id)
        list(pool.map(lambda _: cri.runtime.RemovePodSandbox(remove_pod), range(4)))
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    assert cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []


@pytest.fixture
def dir_with_tmpfs() -> Iterator[Path]:
    """A directory with a tmpfs mounted under it, as critest's recursive read-only test makes."""
    d = Path(tempfile.mkdtemp(prefix="cri-shim-rro-"))
    (d / "tmpfs").mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"none", str(d / "tmpfs").encode(), b"tmpfs", 0, b"")
    assert rc == 0, os.strerror(ctypes.get_errno())
    yield d
    libc.umount2(str(d / "tmpfs").encode(), 2)
    (d / "tmpfs").rmdir()
    d.rmdir()


def handler_does_rro(d: DaemonProcess, handler: str) -> bool:
    status = d.runtime.Status(pb.StatusRequest())
    return any(h.name == handler and h.features.recursive_read_only_mounts for h in status.runtime_handlers)


@pytest.mark.parametrize("handler", BACKENDS)
def test_recursive_read_only_mounts(cri: DaemonProcess, tmp_path: Path, busybox_image: str, handler: str,
                                    dir_with_tmpfs: Path) -> None:
    pod = Pod(cri, f"rro-{handler}", handler, tmp_path / "logs", busybox_image)

    def create(name: str, **mount_fields) -> str:
        cfg = pod.container_config(name, ["sleep", "600"])
        cfg.mounts.append(pb.Mount(container_path="/mnt", host_path=str(dir_with_tmpfs), **mount_fields))
        return cri.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id

    plain = create("plain", readonly=True)
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=plain))
    assert pod.exec(plain, ["touch", "/mnt/tmpfs/file"]).exit_code == 0  # only the top is read-only
    assert pod.exec(plain, ["touch", "/mnt/file"]).exit_code != 0

    bad = [
        (dict(readonly=False, recursive_read_only=True), "recursive_read_only needs readonly"),
        (dict(readonly=True, recursive_read_only=True, propagation=pb.PROPAGATION_HOST_TO_CONTAINER),
         "needs private propagation"),
        (dict(readonly=True, recursive_read_only=True, propagation=pb.PROPAGATION_BIDIRECTIONAL),
         "needs private propagation"),
    ]
    if not handler_does_rro(cri, handler):
        bad.append((dict(readonly=True, recursive_read_only=True), "not supported by this runtime handler"))
    for i, (fields, message) in enumerate(bad):
        with pytest.raises(grpc.RpcError) as exc:
            create(f"bad{i}", **fields)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in exc.value.details() and "'/mnt'" in exc.value.details()
    if handler_does_rro(cri, handler):
        rro = create("rro", readonly=True, recursive_read_only=True)
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=rro))
        r = pod.exec(rro, ["touch", "/mnt/tmpfs/file2"])
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr
    names = {c.metadata.name for c in cri.runtime.ListContainers(pb.ListContainersRequest()).containers}
    assert not any(n.startswith("bad") for n in names)


@pytest.mark.parametrize("handler", BACKENDS)
def test_privileged_ignores_seccomp(cri: DaemonProcess, tmp_path: Path, busybox_image: str,
                                    handler: str) -> None:
    profile = tmp_path / "no-sethostname.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
                       '[{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}')
    pod = Pod(cri, f"priv-seccomp-{handler}", handler, tmp_path / "logs", busybox_image)
    cfg = pod.container_config("c", ["sleep", "600"])
    sc = cfg.linux.security_context
    sc.privileged = True
    sc.seccomp.profile_type = pb.SecurityProfile.Localhost
    sc.seccomp.localhost_ref = str(profile)
    cid = cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    r = pod.exec(cid, ["hostname", "renamed"])
    assert r.exit_code == 0, r.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory bind-mounted onto itself and made rshared, as the kubelet's volumes are."""
    d = Path(tempfile.mkdtemp(prefix="cri-shim-prop-"))
    (d / "mnt").mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    src = str(d / "mnt").encode()
    assert libc.mount(src, src, b"bind", 0x1000 | 0x4000, None) == 0  # MS_BIND | MS_REC
    assert libc.mount(b"", src, b"", 0x100000 | 0x4000, None) == 0  # MS_SHARED | MS_REC
    yield d / "mnt"
    for m in reversed([line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                       if line.split()[4].startswith(str(d))]):
        libc.umount2(m.encode(), 2)
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("handler", BACKENDS)
def test_bidirectional_propagation_reaches_the_host(cri: DaemonProcess, tmp_path: Path, busybox_image: str,
                                                    handler: str, shared_dir: Path) -> None:
    pod = Pod(cri, f"prop-{handler}", handler, tmp_path / "logs", busybox_image)
    cfg = pod.container_config("c", ["sleep", "600"])
    cfg.linux.security_context.privileged = True
    cfg.mounts.append(pb.Mount(container_path=str(shared_dir), host_path=str(shared_dir),
                               propagation=pb.PROPAGATION_BIDIRECTIONAL))
    cid = cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    inner = shared_dir / "from-container"
    r = pod.exec(cid, ["sh", "-c", f"mkdir -p {inner} && mount --bind /etc {inner}"])
    assert r.exit_code == 0, r.stderr
    assert (inner / "passwd").exists()  # the container's mount shows on the host
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
