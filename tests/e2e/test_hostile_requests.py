"""Hostile and impossible requests through the real socket: INVALID_ARGUMENT naming the field,
and nothing created (no pod or container, no files, no mounts, no cgroups).

Every example of items 2 and 3 of the reliability issue is here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from cri_shim import cgroupfs
from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import ROOT, DaemonProcess
from tests.e2e.observe import mounts_under
from tests.e2e.pods import Pod

pytestmark = pytest.mark.root

HEX_ID = re.compile(r"[0-9a-f]{64}")


def cgroup_roots() -> list[Path]:
    return [h.mountpoint for h in cgroupfs.hierarchies()]


def id_dirs_at_roots() -> set[Path]:
    """Directories named like a pod or container id at the top of any hierarchy."""
    return {p for root in cgroup_roots() for p in root.iterdir() if HEX_ID.fullmatch(p.name)}


def _remove_cgroup_tree(top: Path) -> None:
    """Remove a cgroup directory tree, deepest first, killing what a wrongly accepted pod left
    in it: only this test's daemon put processes under its probe parent."""
    if not top.is_dir():
        return
    dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*dirs, top]:
        with contextlib.suppress(OSError):
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.02)  # the killed processes are still leaving


@pytest.fixture
def probe_parent() -> Iterator[str]:
    """A cgroup parent of our own: whatever a wrongly accepted pod made would be under it."""
    name = f"crishim-hostile-{secrets.token_hex(4)}"
    yield f"/{name}"
    for root in cgroup_roots():
        _remove_cgroup_tree(root / name)


@pytest.fixture
def pod_daemon(daemon_factory, test_network: PodNetwork, probe_parent: str) -> Iterator[DaemonProcess]:  # noqa: F811
    """A daemon without images; any pod it was wrongly made to create is removed first."""
    d = daemon_factory(test_network.config_toml())
    yield d
    if d.channel is not None:
        for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))


@contextlib.contextmanager
def watching(paths: list[Path]) -> Iterator[None]:
    """Assert that none of `paths` appears; remove any that did, so a failure leaves no trace."""
    existed = {p: p.exists() for p in paths}
    try:
        yield
    finally:
        appeared = [p for p, was in existed.items() if not was and p.exists()]
        for p in appeared:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    assert appeared == []


def expect_invalid(call: Callable[[], object], *fragments: str) -> str:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    details = exc.value.details()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    for f in fragments:
        assert f in details, details
    return details


def assert_no_pod_left(d: DaemonProcess, cgroup_parent: str | None = None) -> None:
    """No pod listed, no pod directory, no namespace mounts; nothing under `cgroup_parent`."""
    assert not d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    pods_dir = d.state_dir / "pods"
    assert not pods_dir.exists() or not any(pods_dir.iterdir())
    assert mounts_under(d.state_dir) == []
    if cgroup_parent is not None:
        made = [root / cgroup_parent.strip("/") for root in cgroup_roots()]
        assert [p for p in made if p.exists()] == []


# --- RunPodSandbox -------------------------------------------------------------------------------

def _name(cfg: pb.PodSandboxConfig) -> None:
    cfg.metadata.name = "web\x000"


def _sysctl(name: str, value: str = "1") -> Callable[[pb.PodSandboxConfig], None]:
    return lambda cfg: cfg.linux.sysctls.__setitem__(name, value)


def _ports(container: int, host: int) -> Callable[[pb.PodSandboxConfig], None]:
    return lambda cfg: cfg.port_mappings.append(
        pb.PortMapping(protocol=pb.TCP, container_port=container, host_port=host))


def _log_dir(value: str) -> Callable[[pb.PodSandboxConfig], None]:
    return lambda cfg: setattr(cfg, "log_directory", value)


POD_CASES = {
    "nul-in-pod-name": (_name, "config.metadata.name: 'web\\x000' contains a NUL byte"),
    "sysctl-with-slash": (_sysctl("net/ipv4/ip_forward"), "config.linux.sysctls['net/ipv4/ip_forward']: "),
    "sysctl-dot-dot": (_sysctl(".."), "config.linux.sysctls['..']: "),
    "unknown-sysctl": (
        _sysctl("kernel.nonexistent_thing"),
        "config.linux.sysctls['kernel.nonexistent_thing']: 'kernel.nonexistent_thing' is not a sysctl"),
    "sysctl-value-newline": (
        _sysctl("net.ipv4.ip_unprivileged_port_start", "1\n2"),
        "config.linux.sysctls['net.ipv4.ip_unprivileged_port_start']: '1\\n2' contains a line break"),
    "host-port-70000": (_ports(80, 70000), "config.port_mappings[0].host_port: 70000 is outside"),
    "container-port-minus-1": (_ports(-1, 0),
                               "config.port_mappings[0].container_port: -1 is outside 1..65535"),
    "log-directory-climbing": (_log_dir("../../../../tmp/x"),
                               "config.log_directory: '../../../../tmp/x' must be an absolute path"),
    "log-directory-relative": (_log_dir("logs"), "config.log_directory: 'logs' must be an absolute path"),
}


@pytest.mark.parametrize("case", list(POD_CASES))
def test_bad_pod_sandbox_is_refused_before_anything_exists(
        pod_daemon: DaemonProcess, test_network: PodNetwork, probe_parent: str, case: str) -> None:  # noqa: F811
    d = pod_daemon
    mutate, message = POD_CASES[case]
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="hostile", namespace="e2e", uid="uid-h"),
                              hostname="hostile")
    cfg.linux.cgroup_parent = probe_parent
    mutate(cfg)
    # Relative log directories would be made in the daemon's working directory (ROOT).
    with watching([ROOT / "logs", Path(os.path.normpath(ROOT / "../../../../tmp/x")), Path("/tmp/x")]):
        req = pb.RunPodSandboxRequest(config=cfg)
        details = expect_invalid(lambda: d.runtime.RunPodSandbox(req), message)
    assert details.startswith(f"pod sandbox {cfg.metadata.name!r} in namespace 'e2e': "), details
    assert_no_pod_left(d, probe_parent)
    assert not test_network.allocated_ips()


def test_cgroup_parent_above_the_root_is_refused(pod_daemon: DaemonProcess) -> None:
    d = pod_daemon
    before = id_dirs_at_roots()
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="climb", namespace="e2e", uid="uid-c"),
                              hostname="climb")
    cfg.linux.cgroup_parent = "../../../.."
    expect_invalid(lambda: d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)),
                   "pod sandbox 'climb' in namespace 'e2e': ",
                   "config.linux.cgroup_parent: '../../../..' must not contain")
    assert_no_pod_left(d)
    # Nothing named after a sandbox or container id appeared at the top of any hierarchy.
    assert id_dirs_at_roots() - before == set()


# --- CreateContainer ----------------------------------------------------------------------------

def _resources(**kw: object) -> Callable[[pb.ContainerConfig], None]:
    def apply(cfg: pb.ContainerConfig) -> None:
        for k, v in kw.items():
            setattr(cfg.linux.resources, k, v)
    return apply


def _log_path(value: str) -> Callable[[pb.ContainerConfig], None]:
    return lambda cfg: setattr(cfg, "log_path", value)


TOKEN = secrets.token_hex(4)
CONTAINER_CASES: dict[str, tuple[Callable[[pb.ContainerConfig], None], str]] = {
    "memory-1": (_resources(memory_limit_in_bytes=1),
                 "config.linux.resources.memory_limit_in_bytes: 1 is below the minimum"),
    "memory-minus-2": (_resources(memory_limit_in_bytes=-2),
                       "config.linux.resources.memory_limit_in_bytes: -2 is below the minimum"),
    "cpu-shares-2**62": (_resources(cpu_shares=2**62),
                         "config.linux.resources.cpu_shares: 4611686018427387904 is outside 0 or 2..262144"),
    "cpuset-0-999": (_resources(cpuset_cpus="0-999"),
                     "config.linux.resources.cpuset_cpus: '0-999' names CPU"),
    "oom-score-adj-100000": (_resources(oom_score_adj=100000),
                             "config.linux.resources.oom_score_adj: 100000 is outside -1000..1000"),
    "cpu-quota-minus-5": (_resources(cpu_quota=-5),
                          "config.linux.resources.cpu_quota: -5 is outside 0, -1 or 1000.."),
    "log-path-in-etc": (_log_path("/etc/x.log"), "config.log_path: '/etc/x.log' must be relative"),
    "log-path-climbing": (_log_path("../../../../etc/x"), "config.log_path: '../../../../etc/x' leaves its"),
    "log-path-to-etc": (_log_path("../" * 24 + f"etc/x-{TOKEN}"), "config.log_path: "),
    "log-path-in-etc-unique": (_log_path(f"/etc/x-{TOKEN}.log"), "config.log_path: "),
    "nul-in-argv": (lambda cfg: cfg.args.append("a\x00b"), "config.args[0]: 'a\\x00b' contains a NUL byte"),
    "equals-in-env-name": (lambda cfg: cfg.envs.append(pb.KeyValue(key="A=B", value=b"c")),
                           "config.envs[0].key: 'A=B' contains '='"),
}


def cgroup_entries(pod_id: str) -> dict[Path, set[str]]:
    """What is in the pod's cgroup parent (cri-shim's /cri-shim/<pod id>) in each hierarchy."""
    out = {}
    for root in cgroup_roots():
        d = root / "cri-shim" / pod_id
        out[d] = {p.name for p in d.iterdir() if p.is_dir()} if d.is_dir() else set()
    return out


def test_bad_containers_are_refused_before_anything_exists(cri: DaemonProcess, tmp_path: Path,
                                                          busybox_image: str) -> None:
    pod = Pod(cri, "hostile", "runc", tmp_path / "logs", busybox_image)
    log_dir = Path(pod.config.log_directory)
    cgroups = cgroup_entries(pod.id)
    # Where each log path would have pointed, and files in the places the issue names.
    watched = [Path("/etc/x.log"), Path("/etc/x"), Path(f"/etc/x-{TOKEN}"), Path(f"/etc/x-{TOKEN}.log"),
               Path(os.path.normpath(log_dir / "../../../../etc/x"))]
    etc_before = set(os.listdir("/etc"))
    with watching(watched):
        for case, (mutate, message) in CONTAINER_CASES.items():
            cfg = pod.container_config("bad", ["sleep", "60"])
            cfg.log_path = ""
            mutate(cfg)
            req = pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)
            details = expect_invalid(lambda req=req: cri.runtime.CreateContainer(req), message)
            assert details.startswith(f"container 'bad' in pod sandbox {pod.id!r}: "), (case, details)
            assert not cri.runtime.ListContainers(pb.ListContainersRequest()).containers, case
            containers_dir = cri.state_dir / "containers"
            assert not containers_dir.exists() or not any(containers_dir.iterdir()), case
    # Other programs may change /etc meanwhile; ours would be named x*.
    assert not {n for n in set(os.listdir("/etc")) - etc_before if n.startswith("x")}
    assert not log_dir.exists() or not any(log_dir.iterdir())
    assert cgroup_entries(pod.id) == cgroups
    assert [m for m in mounts_under(cri.state_dir) if "/containers/" in m] == []


# --- updates and exec --------------------------------------------------------------------------

def test_bad_updates_and_exec_change_nothing(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, "upd", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("app", ["sleep", "600"], memory=64 << 20)
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    before = pod.status(cid).resources
    cases = {
        "memory_limit_in_bytes": (pb.LinuxContainerResources(memory_limit_in_bytes=1),
                                  "1 is below the minimum"),
        "cpu_shares": (pb.LinuxContainerResources(cpu_shares=2**62), "4611686018427387904 is outside"),
        "cpuset_cpus": (pb.LinuxContainerResources(cpuset_cpus="0-999"), "'0-999' names CPU"),
        "cpu_quota": (pb.LinuxContainerResources(cpu_quota=-5), "-5 is outside"),
        "oom_score_adj": (pb.LinuxContainerResources(oom_score_adj=100000), "100000 is outside"),
    }
    for field, (resources, message) in cases.items():
        expect_invalid(lambda r=resources: cri.runtime.UpdateContainerResources(
            pb.UpdateContainerResourcesRequest(container_id=cid, linux=r)),
            f"container {cid!r}: linux.{field}: {message}")
        expect_invalid(lambda r=resources: cri.runtime.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod.id, resources=r)),
            f"pod sandbox {pod.id!r}: resources.{field}: {message}")
    assert pod.status(cid).resources == before
    expect_invalid(lambda: pod.exec(cid, ["sh", "-c", "echo\x00"]), "cmd[2]: 'echo\\x00' contains a NUL byte")
    expect_invalid(lambda: pod.exec(cid, []), "cmd: the command is empty")
    # A valid update still goes through.
    cri.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=2)))
    assert pod.status(cid).resources.linux.memory_limit_in_bytes == 96 << 20
