"""Issue 5, pods: RunPodSandbox and friends through the real socket with real CNI."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.observe import EventRecorder, mounts_under

pytestmark = pytest.mark.root


def pod_config(name: str, **kw) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="test", uid=f"uid-{name}"),
                              hostname=kw.pop("hostname", name))
    cfg.linux.security_context.namespace_options.pid = kw.pop("pid_mode", pb.CONTAINER)
    for k, v in kw.pop("labels", {}).items():
        cfg.labels[k] = v
    for k, v in kw.items():
        if isinstance(v, str):
            setattr(cfg, k, v)
        else:
            getattr(cfg, k).CopyFrom(v)
    return cfg


@pytest.fixture
def pods(daemon_factory, test_network: PodNetwork) -> DaemonProcess:  # noqa: F811
    d = daemon_factory(test_network.config_toml())
    yield d
    # Remove whatever a failed test left behind, so no pins or IPs leak.
    if d.channel is not None:
        for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))


def _gone(pid: int, timeout: float = 3.0) -> bool:
    """The process has exited (a zombie awaiting its reaper counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


def pod_dir(d: DaemonProcess, pod_id: str) -> Path:
    return d.state_dir / "pods" / pod_id


def test_pod_gets_ip_files_and_namespaces(pods: DaemonProcess, test_network: PodNetwork) -> None:  # noqa: F811
    cfg = pod_config("web", hostname="web-0",
                     dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["test.svc.cluster.local"],
                                             options=["ndots:5"]))
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    pod_id = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    st = pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    assert st.status.state == pb.SANDBOX_READY
    assert ipaddress.ip_address(st.status.network.ip) in ipaddress.ip_network(test_network.subnet)
    assert test_network.allocated_ips() == [st.status.network.ip]
    info = json.loads(st.info["info"])
    assert info["cniResult"]["ips"][0]["address"].startswith(st.status.network.ip)
    d = pod_dir(pods, pod_id)
    assert f"{st.status.network.ip}\tweb-0" in (d / "hosts").read_text()
    assert (d / "resolv.conf").read_text() == (
        "nameserver 10.96.0.10\nsearch test.svc.cluster.local\noptions ndots:5\n")
    inside = subprocess.run(
        ["nsenter", f"--net={d}/ns/net", f"--uts={d}/ns/uts", "sh", "-c",
         "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; ip -o -4 addr show eth0"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    assert inside[0] == "web-0" and inside[1] == "0" and st.status.network.ip in inside[2]


def test_list_filters(pods: DaemonProcess) -> None:
    a = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config("a", labels={"app": "x"}))).pod_sandbox_id
    b = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config("b", labels={"app": "y"}))).pod_sandbox_id
    pods.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b))

    def ids(f: pb.PodSandboxFilter) -> set[str]:
        return {p.id for p in pods.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=f)).items}

    assert ids(pb.PodSandboxFilter()) == {a, b}
    assert ids(pb.PodSandboxFilter(id=a[:12])) == {a}
    assert ids(pb.PodSandboxFilter(label_selector={"app": "y"})) == {b}
    ready = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
    assert ids(ready) == {a}


def test_stop_and_remove_release_everything(pods: DaemonProcess, test_network: PodNetwork) -> None:  # noqa: F811
    pod_id = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config("gone", pid_mode=pb.POD))).pod_sandbox_id
    d = pod_dir(pods, pod_id)
    info = json.loads(pods.runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)).info["info"])
    holder = info["pid"]
    assert holder > 0 and Path(f"/proc/{holder}/comm").read_text().strip() == "catatonit"
    assert len(mounts_under(d)) == 4  # net, uts, ipc pins and /dev/shm
    for _ in range(2):  # idempotent
        pods.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    st = pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    assert st.state == pb.SANDBOX_NOTREADY
    assert test_network.allocated_ips() == []
    assert _gone(holder)
    for _ in range(2):
        pods.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert mounts_under(d) == [] and not d.exists()
    assert not list(test_network.cache_dir.glob("results/*"))
    with pytest.raises(grpc.RpcError) as exc:
        pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and pod_id in exc.value.details()


def test_remove_of_ready_pod_stops_it(pods: DaemonProcess, test_network: PodNetwork) -> None:  # noqa: F811
    pod_id = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("r"))).pod_sandbox_id
    pods.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert test_network.allocated_ips() == [] and mounts_under(pod_dir(pods, pod_id)) == []


def test_bad_requests(pods: DaemonProcess) -> None:
    cfg = pod_config("dup")
    first = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    cases = [
        (pb.RunPodSandboxRequest(config=cfg), grpc.StatusCode.ALREADY_EXISTS, first),
        (pb.RunPodSandboxRequest(config=pod_config("h"), runtime_handler="kata"), grpc.StatusCode.NOT_FOUND,
         "runtime handler 'kata' is not configured (known: crun, pyrunc, runc)"),
        (pb.RunPodSandboxRequest(config=pb.PodSandboxConfig()), grpc.StatusCode.INVALID_ARGUMENT,
         "needs a name and a namespace"),
    ]
    bad_sysctl = pod_config("s")
    bad_sysctl.linux.sysctls["kernel.panic"] = "1"
    cases.append((pb.RunPodSandboxRequest(config=bad_sysctl), grpc.StatusCode.INVALID_ARGUMENT,
                  "kernel.panic"))
    for req, code, text in cases:
        with pytest.raises(grpc.RpcError) as exc:
            pods.runtime.RunPodSandbox(req)
        assert exc.value.code() == code, exc.value.details()
        assert text in exc.value.details()
    # Nothing from the failed attempts is left: one pod, one IP, pins of one pod.
    assert [p.id for p in pods.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [first]
    assert sorted(p.name for p in (pods.state_dir / "pods").iterdir()) == [first]


def test_host_network_pod(pods: DaemonProcess, test_network: PodNetwork) -> None:  # noqa: F811
    cfg = pod_config("hostnet")
    cfg.linux.security_context.namespace_options.network = pb.NODE
    pod_id = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    st = pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    assert st.state == pb.SANDBOX_READY and st.network.ip == ""
    assert test_network.allocated_ips() == []
    assert not (pod_dir(pods, pod_id) / "ns" / "net").exists()


def test_twenty_concurrent_pods(pods: DaemonProcess, test_network: PodNetwork) -> None:  # noqa: F811
    def run(i: int) -> str:
        return pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(f"c{i}"))).pod_sandbox_id

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        ids = list(ex.map(run, range(20)))
    ips = [pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=i)).status.network.ip
           for i in ids]
    assert len(set(ips)) == 20 and all(ips)
    assert sorted(test_network.allocated_ips()) == sorted(ips)

    def remove(i: str) -> None:
        pods.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=i))

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        list(ex.map(remove, ids))
    assert test_network.allocated_ips() == []
    assert mounts_under(pods.state_dir) == []


def test_pods_survive_sigkill_and_half_created_is_cleaned(
    pods: DaemonProcess, test_network: PodNetwork  # noqa: F811
) -> None:
    pod_id = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("keep"))).pod_sandbox_id
    ip = pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status.network.ip
    pods.kill()
    # Fake a crash in the middle of RunPodSandbox: a record in state "creating" with
    # a namespace pin and an IP already taken.
    half = "f" * 64
    half_dir = pods.state_dir / "pods" / half
    (half_dir / "ns").mkdir(parents=True)
    (half_dir / "ns" / "net").touch()
    subprocess.run(["unshare", f"--net={half_dir}/ns/net", "true"], check=True)
    db = sqlite3.connect(pods.root_dir / "sandboxes.db")
    row = db.execute("SELECT meta, status FROM sandboxes WHERE id = ?", (pod_id,)).fetchone()
    meta = json.loads(row[0])
    meta.update(id=half, name="half", dir=str(half_dir))
    db.execute("INSERT INTO sandboxes VALUES (?, ?, ?)",
               (half, json.dumps(meta), json.dumps({"state": "creating", "ips": [], "network_ready": False,
                                                    "holder_pid": 0})))
    db.commit()
    db.close()
    pods.start()
    items = pods.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [p.id for p in items] == [pod_id]
    st = pods.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    assert st.state == pb.SANDBOX_READY and st.network.ip == ip
    assert mounts_under(half_dir) == [] and not half_dir.exists()


def test_events_stream(pods: DaemonProcess) -> None:
    recorder = EventRecorder(pods)
    pod_id = pods.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("ev"))).pod_sandbox_id
    pods.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    kinds = recorder.kinds_for(pod_id)
    assert kinds == [pb.CONTAINER_CREATED_EVENT, pb.CONTAINER_STARTED_EVENT, pb.CONTAINER_STOPPED_EVENT,
                     pb.CONTAINER_DELETED_EVENT]
    assert recorder.events[0].pod_sandbox_status.metadata.name == "ev"
