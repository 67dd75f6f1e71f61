"""Issue 11: the pod's infra process and cgroup, pod network stats, conmon's cgroup.

Every pod gets a cgroup named after its sandbox id under its cgroup parent, holding
catatonit in the pod's namespaces; PodSandboxStats reads the pod network through it;
conmon runs in a cgroup of its own under the pod's parent. Cgroup parents here are made
up per test (as the kubelet's /kubepods/besteffort/pod<uid>) and removed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import remove_all

pytestmark = pytest.mark.root

BACKENDS = ["runc", "crun", "pyrunc"]


def hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (each v1 one, and the unified one)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mnt, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and Path(mnt) not in out:
            out.append(Path(mnt))
    return out


def cgroup_dirs(rel: str) -> list[Path]:
    return [h / rel.lstrip("/") for h in hierarchies()]


def procs_in(d: Path) -> set[int]:
    return {int(p) for p in (d / "cgroup.procs").read_text().split()}


def cgroup_of(pid: int) -> set[str]:
    """The cgroup paths of a process, one per hierarchy."""
    return {line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def ns_inode(path: str | Path) -> int:
    return os.stat(path).st_ino


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def processes_under(parent: str) -> list[int]:
    """Live processes whose cgroup is at or below `parent` in any hierarchy."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and alive(int(p.name)):
            try:
                if any(c == parent or c.startswith(parent + "/") for c in cgroup_of(int(p.name))):
                    out.append(int(p.name))
            except OSError:
                continue
    return out


class Cgroups:
    """Made-up cgroup paths (kubelet pod parents, runtime cgroups), removed at teardown."""

    def __init__(self) -> None:
        self.top = f"/csh-test-{uuid.uuid4().hex[:8]}"
        self.made: list[str] = [self.top]

    def new(self, prefix: str) -> str:
        path = f"{self.top}/{prefix}{uuid.uuid4().hex[:8]}"
        self.made.append(path)
        return path

    def cleanup(self) -> None:
        for rel in sorted(self.made, key=lambda r: -r.count("/")):
            for d in cgroup_dirs(rel):
                if d.exists():
                    d.rmdir()  # fails loudly if the daemon left a child cgroup behind


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    made = Cgroups()
    yield made
    made.cleanup()


@pytest.fixture
def parent(cgroups: Cgroups) -> str:
    """A kubelet-style pod cgroup parent (/kubepods/besteffort/pod<uid>)."""
    return cgroups.new("pod")


def child_cgroups(rel: str) -> list[Path]:
    return [c for p in cgroup_dirs(rel) if p.exists() for c in p.iterdir() if c.is_dir()]


def pod_config(name: str, cgroup_parent: str, pid_mode: int = pb.CONTAINER, log_dir: str = "",
               host_network: bool = False) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="cg", uid=f"uid-{name}"),
                              hostname=name, log_directory=log_dir)
    cfg.linux.cgroup_parent = cgroup_parent
    cfg.linux.security_context.namespace_options.pid = pid_mode
    if host_network:
        cfg.linux.security_context.namespace_options.network = pb.NODE
    return cfg


def make_daemon(daemon_factory, net: PodNetwork, image: str | None, extra: str = "") -> DaemonProcess:
    d = daemon_factory(extra + net.config_toml())
    if image:
        d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
    return d


@pytest.fixture
def cri(daemon_factory, test_network: PodNetwork,  # noqa: F811
        cgroups: Cgroups) -> Iterator[list[DaemonProcess]]:
    """Daemons a test made, cleaned of pods at teardown (before `cgroups` removes the parents)."""
    made: list[DaemonProcess] = []
    yield made
    for d in made:
        remove_all(d)


def run_pod(d: DaemonProcess, cfg: pb.PodSandboxConfig, handler: str = "") -> str:
    req = pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler)
    return d.runtime.RunPodSandbox(req).pod_sandbox_id


def infra_pid(d: DaemonProcess, pod_id: str) -> int:
    st = d.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return json.loads(st.info["info"])["pid"]


def run_container(d: DaemonProcess, pod_id: str, cfg: pb.PodSandboxConfig, image: str, name: str,
                  command: list[str]) -> str:
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                              command=command)
    cid = d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg)).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    return cid


def wait_persisted_running(d: DaemonProcess, cid: str, timeout: float = 5.0) -> None:
    """Until the store says running: the daemon writes container status behind the reply."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(d.root_dir / "containers.db")
        try:
            row = db.execute("SELECT status FROM containers WHERE id = ?", (cid,)).fetchone()
        finally:
            db.close()
        if row and json.loads(row[0])["state"] == "running":
            return
        time.sleep(0.02)
    raise AssertionError(f"container {cid}: running state never reached the store")


def conmon_pid(d: DaemonProcess, cid: str) -> int:
    return int((d.state_dir / "containers" / cid / "conmon.pid").read_text())


@pytest.mark.parametrize("pid_mode", [pb.CONTAINER, pb.POD], ids=["own-pidns", "shared-pidns"])
def test_infra_process_in_sandbox_cgroup_and_pod_namespaces(
        daemon_factory, cri, test_network: PodNetwork, parent: str, pid_mode: int) -> None:  # noqa: F811
    d = make_daemon(daemon_factory, test_network, None)
    cri.append(d)
    pod_id = run_pod(d, pod_config("infra", parent, pid_mode))
    pid = infra_pid(d, pod_id)
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "catatonit"
    # Its cgroup is <parent>/<sandbox id> in every hierarchy, and holds only the infra
    # process (and, for a shared PID namespace, the unshare that is its parent).
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    expected = {pid, ppid} if pid_mode == pb.POD else {pid}
    dirs = cgroup_dirs(f"{parent}/{pod_id}")
    assert len(dirs) >= 2
    for cg in dirs:
        assert procs_in(cg) == expected, cg
    assert cgroup_of(pid) == {f"{parent}/{pod_id}"}
    # In the pod's namespaces: the very ones the pins hold.
    pins = d.state_dir / "pods" / pod_id / "ns"
    for kind in ("net", "ipc", "uts"):
        assert ns_inode(f"/proc/{pid}/ns/{kind}") == ns_inode(pins / kind), kind
    nspid = Path(f"/proc/{pid}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
    if pid_mode == pb.POD:
        assert nspid[-1] == "1"  # PID 1 of the pod's PID namespace
    else:
        assert ns_inode(f"/proc/{pid}/ns/pid") == ns_inode("/proc/self/ns/pid")
    d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert all(gone(p) for p in expected)
    assert all(cg.exists() for cg in dirs)  # removed with the pod, not at stop
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert not any(cg.exists() for cg in dirs)
    assert child_cgroups(parent) == []


def test_pod_stats_network_and_pod_cgroup_usage(daemon_factory, cri, test_network: PodNetwork,  # noqa: F811
                                                 parent: str, busybox_image: str) -> None:
    d = make_daemon(daemon_factory, test_network, busybox_image)
    cri.append(d)
    cfg = pod_config("stats", parent)
    pod_id = run_pod(d, cfg)
    cid = run_container(d, pod_id, cfg, busybox_image, "app", ["sleep", "3600"])

    def stats() -> pb.PodSandboxStats:
        return d.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats

    before = stats()
    gateway = test_network.subnet.rsplit(".", 1)[0] + ".1"  # the test's own bridge
    ping_cmd = ["/bin/busybox", "ping", "-c", "5", "-i", "0.2", "-s", "1000", gateway]
    ping = d.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=ping_cmd, timeout=20))
    assert ping.exit_code == 0, ping.stderr
    after = stats()
    net = after.linux.network
    assert net.timestamp > before.linux.network.timestamp > 0
    assert net.default_interface.name == "eth0"
    assert [i.name for i in net.interfaces] == ["eth0"]  # loopback left out, like cadvisor
    for field in ("rx_bytes", "tx_bytes"):
        grew = getattr(net.default_interface, field).value - getattr(before.linux.network.default_interface,
                                                                     field).value
        assert grew >= 5 * 1000, field
    assert net.default_interface.rx_errors.value == 0 and net.default_interface.tx_errors.value == 0
    # CPU and memory of the pod's cgroup: its containers, the infra process and conmon.
    cpu, mem = after.linux.cpu, after.linux.memory
    assert cpu.timestamp > 0 and mem.timestamp > 0 and after.linux.process.timestamp > 0
    assert cpu.usage_core_nano_seconds.value > 0
    assert cpu.usage_nano_cores.value > 0  # the rate since `before`
    container_mem = after.linux.containers[0].memory.usage_bytes.value
    assert mem.usage_bytes.value > container_mem > 0 and mem.working_set_bytes.value > 0
    listed = d.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(
        filter=pb.PodSandboxStatsFilter(id=pod_id))).stats
    assert [s.attributes.id for s in listed] == [pod_id]
    assert listed[0].linux.network.default_interface.rx_bytes.value >= net.default_interface.rx_bytes.value


@pytest.mark.parametrize("handler", BACKENDS)
def test_conmon_runs_in_a_cgroup_under_the_pod(daemon_factory, cri, test_network: PodNetwork,  # noqa: F811
                                               parent: str, busybox_image: str, handler: str) -> None:
    d = make_daemon(daemon_factory, test_network, busybox_image)
    cri.append(d)
    cfg = pod_config(f"conmon-{handler}", parent)
    pod_id = run_pod(d, cfg, handler)
    cid = run_container(d, pod_id, cfg, busybox_image, "app", ["sleep", "3600"])
    monitor = conmon_pid(d, cid)
    assert cgroup_of(monitor) == {f"{parent}/cri-shim-conmon-{cid}"}
    dirs = cgroup_dirs(f"{parent}/cri-shim-conmon-{cid}")
    for cg in dirs:
        assert procs_in(cg) == {monitor}, cg
    # The container itself is where the runtime put it, beside conmon.
    st = d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True))
    assert f"{parent}/{cid}" in cgroup_of(json.loads(st.info["info"])["pid"])
    d.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    d.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    assert gone(monitor)
    assert not any(cg.exists() for cg in dirs)
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert processes_under(parent) == [] and child_cgroups(parent) == []


def test_conmon_in_a_configured_runtime_cgroup(daemon_factory, cri, test_network: PodNetwork,  # noqa: F811
                                               cgroups: Cgroups, parent: str, busybox_image: str) -> None:
    runtime_cg = cgroups.new("runtime")
    d = make_daemon(daemon_factory, test_network, busybox_image, f'conmon_cgroup = "{runtime_cg}"\n')
    cri.append(d)
    cfg = pod_config("rtcg", parent)
    pod_id = run_pod(d, cfg)
    cid = run_container(d, pod_id, cfg, busybox_image, "app", ["sleep", "3600"])
    monitor = conmon_pid(d, cid)
    assert cgroup_of(monitor) == {f"{runtime_cg}/cri-shim-conmon-{cid}"}
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert gone(monitor)
    assert child_cgroups(runtime_cg) == [] and child_cgroups(parent) == []


def test_bad_conmon_cgroup_setting_is_refused(daemon_factory) -> None:
    d = daemon_factory('conmon_cgroup = "relative/path"\n', start=False)
    with pytest.raises(RuntimeError, match="conmon_cgroup 'relative/path'"):
        d.start()


def test_infra_survives_daemon_sigkill(daemon_factory, cri, test_network: PodNetwork,  # noqa: F811
                                       cgroups: Cgroups, parent: str, busybox_image: str) -> None:
    d = make_daemon(daemon_factory, test_network, busybox_image)
    cri.append(d)
    keep_parent = cgroups.new("pod")
    keep_cfg = pod_config("keep", keep_parent, pb.POD)
    keep = run_pod(d, keep_cfg)
    lost = run_pod(d, pod_config("lost", parent))
    keep_pid, lost_pid = infra_pid(d, keep), infra_pid(d, lost)
    cid = run_container(d, keep, keep_cfg, busybox_image, "app", ["sleep", "3600"])
    wait_persisted_running(d, cid)
    d.kill()
    assert alive(keep_pid) and alive(lost_pid)
    os.kill(lost_pid, signal.SIGKILL)  # dies while the daemon is down
    assert gone(lost_pid)
    d.start()
    st = d.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=keep)).status
    assert st.state == pb.SANDBOX_READY and infra_pid(d, keep) == keep_pid
    lost_st = d.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=lost)).status
    assert lost_st.state == pb.SANDBOX_NOTREADY
    # Found again: stats read the network through it; the container still shares its PID namespace.
    stats = d.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=keep)).stats
    assert stats.linux.network.default_interface.name == "eth0"
    ps = d.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["cat", "/proc/1/comm"], timeout=10))
    assert ps.stdout == b"catatonit\n"
    for pod_id in (keep, lost):
        d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert gone(keep_pid)
    for rel in (parent, keep_parent):
        assert processes_under(rel) == [] and child_cgroups(rel) == []


def test_failed_run_pod_sandbox_leaves_nothing(daemon_factory, cri, test_network: PodNetwork,  # noqa: F811
                                               parent: str, tmp_path: Path) -> None:
    # The infra process cannot start.
    d = make_daemon(daemon_factory, test_network, None, 'pause_init = "/nonexistent/catatonit"\n')
    cri.append(d)
    with pytest.raises(grpc.RpcError) as exc:
        run_pod(d, pod_config("noinfra", parent))
    assert exc.value.code() == grpc.StatusCode.INTERNAL and "infra process" in exc.value.details()
    # CNI ADD ran beside the failing infra process, and its address went back to the pool.
    assert test_network.allocated_ips() == []
    assert not test_network.cache_dir.exists() or list(test_network.cache_dir.rglob("*-*")) == []
    # CNI ADD fails while the infra process starts.
    conf = tmp_path / "broken-net.d"
    conf.mkdir()
    (conf / "10-broken.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "csh-no-such-plugin"}]}))
    broken = daemon_factory(f'[cni]\nconf_dir = "{conf}"\nbin_dirs = ["/usr/lib/cni"]\n', name="broken")
    cri.append(broken)
    with pytest.raises(grpc.RpcError) as exc:
        run_pod(broken, pod_config("nonet", parent, pb.POD))
    assert "csh-no-such-plugin" in exc.value.details()
    for daemon in (d, broken):
        assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
        assert list((daemon.state_dir / "pods").iterdir()) == []
    assert processes_under(parent) == [] and child_cgroups(parent) == []


def test_host_network_pod_has_an_infra_cgroup(daemon_factory, cri, test_network: PodNetwork,  # noqa: F811
                                              parent: str) -> None:
    d = make_daemon(daemon_factory, test_network, None)
    cri.append(d)
    pod_id = run_pod(d, pod_config("hostnet", parent, host_network=True))
    pid = infra_pid(d, pod_id)
    assert cgroup_of(pid) == {f"{parent}/{pod_id}"}
    assert ns_inode(f"/proc/{pid}/ns/net") == ns_inode("/proc/self/ns/net")
    net = d.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats.linux.network
    assert net.interfaces and "lo" not in [i.name for i in net.interfaces]  # the host's interfaces
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert gone(pid) and not any(p.exists() for p in cgroup_dirs(f"{parent}/{pod_id}"))
