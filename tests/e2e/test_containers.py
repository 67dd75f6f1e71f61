"""Issue 5, containers: pods with containers on every backend, through the real socket.

Real conmon, real CNI, an image pulled from a local registry; run once per backend.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.observe import EventRecorder, mounts_under
from tests.e2e.pods import BACKENDS, Pod

pytestmark = pytest.mark.root

CRI_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (P|F) (.*)$")


def conmon_pids(d: DaemonProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"conmon.*{d.state_dir}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cgroup_dirs(pod_id: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/cri-shim/{pod_id}*")] + \
        [p for p in Path("/sys/fs/cgroup").glob(f"cri-shim/{pod_id}*")]


@pytest.mark.parametrize("handler", BACKENDS)
def test_two_containers_share_a_pod(cri: DaemonProcess, handler: str, tmp_path: Path,
                                    test_network: PodNetwork, busybox_image: str) -> None:  # noqa: F811
    pod = Pod(cri, f"duo-{handler}", handler, tmp_path / "logs", busybox_image)
    server = pod.run("server", ["sh", "-c", "mkdir -p /www && echo hello-from-server > /www/index.html && "
                                "echo serving; echo oops >&2; exec httpd -f -p 8080 -h /www"],
                     labels={"role": "server"})
    client = pod.run("client", ["sleep", "3600"])
    for cid in (server, client):
        st = pod.wait_state(cid, pb.CONTAINER_RUNNING)
        assert st.started_at > st.created_at > 0
        assert st.image_ref and st.log_path.endswith("/0.log")
    ip = cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status.network.ip
    for cid in (server, client):
        out = pod.exec(cid, ["ip", "-o", "-4", "addr", "show", "eth0"])
        assert out.exit_code == 0 and ip in out.stdout.decode()
    deadline = time.monotonic() + 10
    while True:
        got = pod.exec(client, ["wget", "-qO-", "http://127.0.0.1:8080/index.html"])
        if got.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.stdout == b"hello-from-server\n", got
    # ExecSync: stdout, stderr, exit code.
    r = pod.exec(client, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 7)
    with pytest.raises(grpc.RpcError) as exc:
        pod.exec(client, ["sleep", "30"], timeout=1)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # CRI log format.
    lines = (tmp_path / "logs" / "server" / "0.log").read_text().splitlines()
    parsed = [CRI_LOG_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert ("stdout", "F", "serving") in [(m.group(2), m.group(3), m.group(4)) for m in parsed if m]
    assert ("stderr", "F", "oops") in [(m.group(2), m.group(3), m.group(4)) for m in parsed if m]
    listed = cri.runtime.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
        pod_sandbox_id=pod.id, label_selector={"role": "server"}))).containers
    assert [c.id for c in listed] == [server]
    # Teardown leaves nothing behind.
    cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    for cid in (server, client):
        assert pod.status(cid).state == pb.CONTAINER_EXITED
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    assert mounts_under(cri.state_dir) == [] and mounts_under(cri.root_dir) == []
    assert conmon_pids(cri) == []
    assert test_network.allocated_ips() == []
    assert cgroup_dirs(pod.id) == [] and not list(Path("/sys/fs/cgroup/memory/cri-shim").glob(f"{pod.id}/*"))


@pytest.mark.parametrize("handler", BACKENDS)
def test_exit_codes_and_oom(cri: DaemonProcess, handler: str, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, f"exits-{handler}", handler, tmp_path / "logs", busybox_image)
    three = pod.run("three", ["sh", "-c", "exit 3"])
    st = pod.wait_state(three, pb.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (3, "Error")
    assert st.finished_at >= st.started_at
    zero = pod.run("zero", ["true"])
    st = pod.wait_state(zero, pb.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (0, "Completed")
    hog = pod.run("hog", ["sh", "-c", "head -c 200m /dev/zero | tail"], memory=32 << 20)
    st = pod.wait_state(hog, pb.CONTAINER_EXITED, timeout=60)
    assert st.reason == "OOMKilled", st
    assert st.exit_code == 137


@pytest.mark.parametrize("handler", BACKENDS)
def test_stop_remove_idempotent_and_signals(cri: DaemonProcess, handler: str, tmp_path: Path,
                                            busybox_image: str) -> None:
    pod = Pod(cri, f"stop-{handler}", handler, tmp_path / "logs", busybox_image)
    polite = pod.run("polite", ["sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"])
    pod.wait_state(polite, pb.CONTAINER_RUNNING)
    time.sleep(0.3)
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=polite, timeout=10))
    assert pod.status(polite).exit_code == 42
    stubborn = pod.run("stubborn", ["sleep", "3600"])
    t = time.monotonic()
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=stubborn, timeout=1))
    assert time.monotonic() - t < 8
    assert pod.status(stubborn).exit_code == 137
    running = pod.run("running", ["sleep", "3600"])
    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=running))  # forcibly
    for cid in (polite, stubborn, running, "0" * 64):
        cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    # Gone from their places when the call answers (bundle, conmon's exit file, rootfs
    # directory), and from the trash they were moved into soon after.
    ids = (polite, stubborn, running)
    places = [cri.state_dir / "containers", cri.state_dir / "exits", cri.root_dir / "rootfs"]
    assert not [p / cid for p in places for cid in ids if (p / cid).exists()]
    trashes = (cri.state_dir / "trash", cri.root_dir / "trash")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [e for t in trashes if t.is_dir() for e in t.iterdir() if e.name.split(".")[0] in ids]
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"still in the trash: {left}"


def test_bad_input(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(cri, "bad", "runc", tmp_path / "logs", busybox_image)
    ok = pod.create("dup", ["true"])

    def conmon_cgroups() -> set[Path]:
        return set(Path("/sys/fs/cgroup").glob("*/**/cri-shim-conmon-*"))

    before = conmon_cgroups()

    def expect(req: pb.CreateContainerRequest, code: grpc.StatusCode, text: str) -> None:
        with pytest.raises(grpc.RpcError) as exc:
            cri.runtime.CreateContainer(req)
        assert exc.value.code() == code, exc.value.details()
        assert text in exc.value.details()

    cfg = pod.container_config("x", ["true"])
    cfg.image.image = "127.0.0.1:1/never/pulled:latest"
    expect(pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg), grpc.StatusCode.NOT_FOUND,
           "never/pulled")
    expect(pb.CreateContainerRequest(pod_sandbox_id="f" * 64, config=pod.container_config("x", ["true"])),
           grpc.StatusCode.NOT_FOUND, "f" * 64)
    cfg = pod.container_config("m", ["true"])
    cfg.mounts.append(pb.Mount(container_path="/data", host_path=str(tmp_path / "missing")))
    expect(pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg), grpc.StatusCode.INVALID_ARGUMENT,
           f"host_path {tmp_path / 'missing'} does not exist")
    expect(pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=pod.container_config("dup", ["true"])),
           grpc.StatusCode.ALREADY_EXISTS, ok)
    # Found while the spec is made, when conmon is already started and waiting to run the create.
    cfg = pod.container_config("t", ["true"])
    cfg.linux.security_context.namespace_options.pid = pb.TARGET
    cfg.linux.security_context.namespace_options.target_id = ok
    expect(pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg), grpc.StatusCode.FAILED_PRECONDITION,
           f"pid namespace target container {ok} is not running")
    # Only the first container exists; nothing half-made is left in the state dir, and the
    # conmon started for the one refused while its spec was made is gone, with its cgroup.
    assert [c.id for c in cri.runtime.ListContainers(pb.ListContainersRequest()).containers] == [ok]
    assert sorted(p.name for p in (cri.state_dir / "containers").iterdir()) == [ok]
    assert len(conmon_pids(cri)) == 1
    assert conmon_cgroups() == before
    with pytest.raises(grpc.RpcError) as exc:
        cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="e" * 64))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("handler", BACKENDS)
def test_containers_survive_sigkill_of_daemon(cri: DaemonProcess, handler: str, tmp_path: Path,
                                              busybox_image: str) -> None:
    pod = Pod(cri, f"survive-{handler}", handler, tmp_path / "logs", busybox_image)
    long = pod.run("long", ["sleep", "3600"])
    short = pod.run("short", ["sh", "-c", "sleep 2; exit 5"])
    pid = pod.exec(long, ["sh", "-c", "echo $$"]).exit_code
    assert pid == 0
    cri.kill()
    time.sleep(3)  # "short" exits while the daemon is down
    cri.start()
    assert pod.status(long).state == pb.CONTAINER_RUNNING
    assert pod.exec(long, ["true"]).exit_code == 0
    st = pod.status(short)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 5, "Error")
    ids = {c.id for c in cri.runtime.ListContainers(pb.ListContainersRequest()).containers}
    assert {long, short} <= ids


def test_update_reopen_stats_and_events(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    recorder = EventRecorder(cri)
    pod = Pod(cri, "misc", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("app", ["sh", "-c", "while true; do echo tick; sleep 0.2; done"], memory=64 << 20)
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    # UpdateContainerResources reaches the cgroup and the status.
    cri.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=256)))
    st = pod.status(cid)
    assert st.resources.linux.memory_limit_in_bytes == 96 << 20
    info = json.loads(cri.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"])
    cg = info["cgroupsPath"].lstrip("/")
    limit = (Path("/sys/fs/cgroup/memory") / cg / "memory.limit_in_bytes")
    if not limit.exists():
        limit = Path("/sys/fs/cgroup") / cg / "memory.max"
    assert int(limit.read_text()) == 96 << 20
    # ReopenContainerLog: conmon starts a new file after the old one is moved away.
    log = tmp_path / "logs" / "app" / "0.log"
    log.rename(log.with_suffix(".old"))
    cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    deadline = time.monotonic() + 5
    while not (log.exists() and "tick" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "stdout F tick" in log.read_text()
    # Stats from the cgroup.
    stats = cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert stats.cpu.usage_core_nano_seconds.value > 0
    assert stats.memory.working_set_bytes.value > 0
    assert stats.memory.available_bytes.value == (96 << 20) - stats.memory.working_set_bytes.value
    time.sleep(0.3)  # the kubelet's CPU rate comes from two samples
    again = cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert again.cpu.usage_nano_cores.value > 0 and again.cpu.timestamp > stats.cpu.timestamp
    assert stats.writable_layer.used_bytes.value >= 0 and stats.attributes.id == cid
    listed = cri.runtime.ListContainerStats(pb.ListContainerStatsRequest()).stats
    assert [s.attributes.id for s in listed] == [cid]
    pstats = cri.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod.id)).stats
    assert pstats.linux.network.default_interface.name == "eth0"
    assert pstats.linux.network.default_interface.rx_bytes.value > 0
    assert pstats.linux.process.process_count.value >= 2
    assert [c.attributes.id for c in pstats.linux.containers] == [cid]
    descs = cri.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors
    assert "container_cpu_usage_seconds_total" in {d.name for d in descs}
    metrics = cri.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
    assert metrics[0].pod_sandbox_id == pod.id and metrics[0].container_metrics[0].container_id == cid
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    kinds = recorder.kinds_for(cid)
    assert kinds == [pb.CONTAINER_CREATED_EVENT, pb.CONTAINER_STARTED_EVENT, pb.CONTAINER_STOPPED_EVENT,
                     pb.CONTAINER_DELETED_EVENT]


def test_half_created_container_is_cleaned_up(cri: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    import sqlite3

    pod = Pod(cri, "half", "runc", tmp_path / "logs", busybox_image)
    cid = pod.create("real", ["sleep", "3600"])
    cri.kill()
    db = sqlite3.connect(cri.root_dir / "containers.db")
    meta, status = db.execute("SELECT meta, status FROM containers WHERE id = ?", (cid,)).fetchone()
    half = "a" * 64
    meta = json.loads(meta)
    bundle = cri.state_dir / "containers" / half
    bundle.mkdir()
    meta.update(id=half, name="half", bundle=str(bundle))
    status = json.loads(status)
    status["state"] = "creating"
    db.execute("INSERT INTO containers VALUES (?, ?, ?)", (half, json.dumps(meta), json.dumps(status)))
    db.commit()
    db.close()
    cri.start()
    ids = [c.id for c in cri.runtime.ListContainers(pb.ListContainersRequest()).containers]
    assert ids == [cid] and not bundle.exists()
    assert pod.status(cid).state == pb.CONTAINER_CREATED


def test_native_snapshotter(daemon_factory, test_network: PodNetwork, tmp_path: Path,  # noqa: F811
                            busybox_image: str) -> None:
    d = daemon_factory(test_network.config_toml() + '[images]\nsnapshotter = "native"\n')
    d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox_image)))
    pod = Pod(d, "native", "runc", tmp_path / "logs", busybox_image)
    cid = pod.run("app", ["sleep", "3600"])
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    out = pod.exec(cid, ["sh", "-c", "cat /etc/motd; ls /www"])
    assert out.stdout == b"cri-shim test image\n"  # the whiteout of /www/placeholder holds
    assert mounts_under(d.root_dir) == []  # copied, not mounted
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert not list((d.root_dir / "rootfs").iterdir())


def test_host_port_and_dual_stack(daemon_factory, tmp_path: Path, busybox_image: str) -> None:
    import uuid

    bridge = f"csh{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-dual.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "dual", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                      "ranges": [[{"subnet": "10.252.7.0/24"}], [{"subnet": "fd00:c5:7::/64"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"}]}))
    d = daemon_factory(f'[cni]\nconf_dir = "{conf}"\nbin_dirs = ["/usr/lib/cni"]\n'
                       f'cache_dir = "{tmp_path / "cache"}"\n')
    try:
        d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox_image)))
        pod = Pod.__new__(Pod)
        pod.d, pod.image = d, busybox_image
        pod.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="ports", namespace="e2e", uid="uid-ports"), hostname="ports",
            log_directory=str(tmp_path / "logs"),
            port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=18931)])
        pod.config.linux.security_context.namespace_options.pid = pb.CONTAINER
        pod.id = d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod.config)).pod_sandbox_id
        net = d.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status.network
        assert net.ip.startswith("10.252.7.")
        assert [a.ip for a in net.additional_ips][0].startswith("fd00:c5:7::")
        pod.run("web", ["sh", "-c",
                        "mkdir -p /www && echo via-hostport > /www/i && httpd -f -p 8080 -h /www"])
        deadline = time.monotonic() + 10
        out = b""
        while time.monotonic() < deadline:
            # The gateway address is local to the host, so the portmap DNAT rules apply to it.
            r = subprocess.run(["busybox", "wget", "-qO-", "http://10.252.7.1:18931/i"], capture_output=True,
                               timeout=5)
            out = r.stdout
            if r.returncode == 0:
                break
            time.sleep(0.2)
        assert out == b"via-hostport\n"
        d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
        rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
        assert "18931" not in rules
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
