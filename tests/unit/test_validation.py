"""cri_shim.validation: every bad value is INVALID_ARGUMENT naming its field; kubelet values pass."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cri_shim import validation
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument
from cri_shim.validation import cpu_lists
from cri_shim.validation.host import LiveHost
from cri_shim.validation.resources import page_size_bytes

HOST = validation.FixedHost(
    cpus=frozenset({0, 1, 2, 3}), memory_nodes=frozenset({0}),
    hugepage_sizes=frozenset({2 << 20, 1 << 30}),
    sysctls=frozenset({"net.ipv4.ip_forward", "kernel.shm_rmid_forced", "net.ipv4.conf.default.rp_filter",
                       "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_port_range"}),
)
UID = "8d1b3e7e-2f7c-4a59-9d4c-0e6a1f2b3c4d"


def kubelet_pod(driver: str = "cgroupfs") -> pb.PodSandboxConfig:
    """What the kubelet sends for a Burstable pod."""
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web-0", namespace="default", uid=UID, attempt=0),
        hostname="web-0", log_directory=f"/var/log/pods/default_web-0_{UID}",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"],
                                searches=["default.svc.cluster.local", "svc.cluster.local"],
                                options=["ndots:5"]),
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=0),
                       pb.PortMapping(protocol=pb.UDP, container_port=53, host_port=5353,
                                      host_ip="127.0.0.1")],
        labels={"io.kubernetes.pod.name": "web-0", "app": "web"},
        annotations={"kubernetes.io/config.source": "api"},
    )
    if driver == "systemd":
        cfg.linux.cgroup_parent = f"kubepods-burstable-pod{UID.replace('-', '_')}.slice"
    else:
        cfg.linux.cgroup_parent = f"/kubepods/burstable/pod{UID}"
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    cfg.linux.sysctls["net.ipv4.ip_local_port_range"] = "1024\t65000"
    cfg.linux.resources.CopyFrom(pb.LinuxContainerResources(cpu_shares=2, cpu_period=100000))
    cfg.linux.overhead.CopyFrom(pb.LinuxContainerResources(cpu_shares=2, memory_limit_in_bytes=1 << 20))
    return cfg


def kubelet_container() -> pb.ContainerConfig:
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app", attempt=1), image=pb.ImageSpec(image="busybox"),
        command=["/bin/sh", "-c"], args=["exec sleep 3600"], working_dir="/srv",
        envs=[pb.KeyValue(key="KUBERNETES_SERVICE_HOST", value=b"10.96.0.1"),
              pb.KeyValue(key="EMPTY", value=b"")],
        mounts=[pb.Mount(container_path="/var/run/secrets/kubernetes.io/serviceaccount",
                         host_path=f"/var/lib/kubelet/pods/{UID}/volumes/x", readonly=True)],
        devices=[pb.Device(container_path="/dev/fuse", host_path="/dev/fuse", permissions="rwm"),
                 pb.Device(host_path="/dev/null", permissions="")],
        log_path="app/1.log",
    )
    r = cfg.linux.resources
    r.cpu_shares, r.cpu_period, r.memory_limit_in_bytes, r.oom_score_adj = 2, 100000, 0, -997
    r.cpuset_cpus, r.cpuset_mems = "0-1,3", "0"
    r.hugepage_limits.add(page_size="2MB", limit=0)
    r.hugepage_limits.add(page_size="1GB", limit=1 << 30)
    r.unified["memory.high"] = "max"
    cfg.linux.security_context.masked_paths.extend(["/proc/kcore", "/sys/firmware"])
    cfg.linux.security_context.readonly_paths.append("/proc/sys")
    return cfg


def run_pod(cfg: pb.PodSandboxConfig, driver: str = "cgroupfs") -> None:
    validation.run_pod_sandbox(pb.RunPodSandboxRequest(config=cfg), driver, HOST)


def create(cfg: pb.ContainerConfig, sandbox: pb.PodSandboxConfig | None = None) -> None:
    req = pb.CreateContainerRequest(pod_sandbox_id="p1", config=cfg)
    if sandbox is not None:
        req.sandbox_config.CopyFrom(sandbox)
    validation.create_container(req, "cgroupfs", HOST)


def expect_invalid(call: Callable[[], None], *fragments: str) -> str:
    with pytest.raises(InvalidArgument) as exc:
        call()
    for f in fragments:
        assert f in exc.value.message, exc.value.message
    return exc.value.message


# --- what the kubelet really sends passes ------------------------------------------------------

@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_kubelet_requests_pass(driver: str) -> None:
    pod = kubelet_pod(driver)
    validation.run_pod_sandbox(pb.RunPodSandboxRequest(config=pod), driver, HOST)
    req = pb.CreateContainerRequest(pod_sandbox_id="p1", config=kubelet_container(), sandbox_config=pod)
    validation.create_container(req, driver, HOST)
    validation.exec_sync(pb.ExecSyncRequest(container_id="c", cmd=["sh", "-c", "true"], timeout=5))


@pytest.mark.parametrize("resources", [
    pb.LinuxContainerResources(),
    pb.LinuxContainerResources(cpu_shares=2, cpu_period=100000),
    pb.LinuxContainerResources(cpu_quota=-1),
    pb.LinuxContainerResources(cpu_quota=1000, cpu_period=1000),
    pb.LinuxContainerResources(cpu_quota=50000, cpu_period=1000000, cpu_shares=262144),
    pb.LinuxContainerResources(memory_limit_in_bytes=6 << 20, memory_swap_limit_in_bytes=6 << 20),
    pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=-1),
    pb.LinuxContainerResources(oom_score_adj=-1000),
    pb.LinuxContainerResources(oom_score_adj=1000),
    pb.LinuxContainerResources(cpuset_cpus="0-3", cpuset_mems="0"),
], ids=str)
def test_good_resources(resources: pb.LinuxContainerResources) -> None:
    validation.update_container_resources(
        pb.UpdateContainerResourcesRequest(container_id="c", linux=resources), HOST)
    validation.update_pod_sandbox_resources(pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id="p", resources=resources, overhead=resources), HOST)


@pytest.mark.parametrize("parent", ["", "/", "/kubepods/besteffort/pod1", "kubepods/pod1", "/a//b/",
                                    "kubepods.slice"])
def test_cgroupfs_parents_pass(parent: str) -> None:
    cfg = kubelet_pod()
    cfg.linux.cgroup_parent = parent
    run_pod(cfg)


@pytest.mark.parametrize("parent", ["", "-.slice", "kubepods.slice", "kubepods-besteffort.slice"])
def test_systemd_parents_pass(parent: str) -> None:
    cfg = kubelet_pod("systemd")
    cfg.linux.cgroup_parent = parent
    run_pod(cfg, "systemd")


# --- resources ---------------------------------------------------------------------------------

BAD_RESOURCES = [
    # (field, value, what the message says)
    ("memory_limit_in_bytes", 1, "below the minimum of 6291456"),
    ("memory_limit_in_bytes", -2, "-2 is below the minimum"),
    ("memory_limit_in_bytes", (6 << 20) - 1, "below the minimum"),
    ("cpu_shares", 2**62, "4611686018427387904 is outside 0 or 2..262144"),
    ("cpu_shares", 1, "1 is outside 0 or 2..262144"),
    ("cpu_shares", -2, "outside"),
    ("cpu_quota", -5, "-5 is outside 0, -1 or 1000.."),
    ("cpu_quota", 999, "outside"),
    ("cpu_quota", 1 << 44, "outside"),
    ("cpu_period", 999, "999 is outside 0 or 1000..1000000"),
    ("cpu_period", 1000001, "outside"),
    ("cpu_period", -1, "outside"),
    ("oom_score_adj", 100000, "100000 is outside -1000..1000"),
    ("oom_score_adj", -1001, "outside"),
    ("cpuset_cpus", "0-999", "names CPU 4, which this host does not have (it has 0-3)"),
    ("cpuset_cpus", "7", "names CPU 7"),
    ("cpuset_cpus", "0-4294967295", "names CPU 4"),
    ("cpuset_cpus", "3-1", "runs backwards"),
    ("cpuset_cpus", "0,,1", "not a list"),
    ("cpuset_cpus", "a", "not a list"),
    ("cpuset_cpus", " 0", "not a list"),
    ("cpuset_cpus", "0-8:2/4", "not a list"),
    ("cpuset_cpus", "\u0663", "not a list"),  # ARABIC-INDIC DIGIT THREE: int() reads it, the kernel not
    ("cpuset_cpus", "0\x00", "NUL"),
    ("cpuset_mems", "1", "names memory node 1"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_RESOURCES, ids=lambda v: repr(v)[:30])
def test_bad_resources_everywhere(field: str, value: object, message: str) -> None:
    r = pb.LinuxContainerResources()
    setattr(r, field, value)
    ctr = kubelet_container()
    ctr.linux.resources.ClearField(field)
    setattr(ctr.linux.resources, field, value)
    expect_invalid(lambda: create(ctr), "container 'app' in pod sandbox 'p1'",
                   f"config.linux.resources.{field}: ", message)
    expect_invalid(lambda: validation.update_container_resources(
        pb.UpdateContainerResourcesRequest(container_id="c1", linux=r), HOST),
        "container 'c1': ", f"linux.{field}: ", message)
    expect_invalid(lambda: validation.update_pod_sandbox_resources(
        pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="p1", resources=r), HOST),
        "pod sandbox 'p1': ", f"resources.{field}: ", message)
    pod = kubelet_pod()
    setattr(pod.linux.resources, field, value)
    expect_invalid(lambda: run_pod(pod), f"config.linux.resources.{field}: ", message)


@pytest.mark.parametrize(("resources", "field", "message"), [
    (pb.LinuxContainerResources(memory_swap_limit_in_bytes=-2), "memory_swap_limit_in_bytes", "negative"),
    (pb.LinuxContainerResources(memory_swap_limit_in_bytes=64 << 20), "memory_swap_limit_in_bytes",
     "without memory_limit_in_bytes"),
    (pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=32 << 20),
     "memory_swap_limit_in_bytes", "below memory_limit_in_bytes 67108864"),
    (pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2M", limit=1)]),
     "hugepage_limits[0].page_size", "not a page size like"),
    (pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2MB"),
                                                 pb.HugepageLimit(page_size="64KB")]),
     "hugepage_limits[1].page_size", "'64KB' is not a huge page size of this host (2MB, 1GB)"),
    (pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=1 << 63)]),
     "hugepage_limits[0].limit", "signed 64-bit"),
    (pb.LinuxContainerResources(unified={"../cgroup.procs": "1"}), "unified['../cgroup.procs']", "file name"),
    (pb.LinuxContainerResources(unified={"..": "1"}), "unified['..']", "file name"),
    (pb.LinuxContainerResources(unified={"": "1"}), "unified['']", "file name"),
    (pb.LinuxContainerResources(unified={"memory.max": "1\n2"}), "unified['memory.max']", "line break"),
    (pb.LinuxContainerResources(unified={"memory.max": "1\x00"}), "unified['memory.max']", "NUL"),
], ids=lambda v: repr(v)[:40])
def test_bad_memory_hugepages_unified(resources: pb.LinuxContainerResources, field: str,
                                      message: str) -> None:
    req = pb.UpdateContainerResourcesRequest(container_id="c1", linux=resources)
    expect_invalid(lambda: validation.update_container_resources(req, HOST), f"linux.{field}: ", message)


def test_overhead_has_no_memory_floor_but_no_negatives() -> None:
    pod = kubelet_pod()
    pod.linux.overhead.memory_limit_in_bytes = 1
    run_pod(pod)
    pod.linux.overhead.memory_limit_in_bytes = -1
    expect_invalid(lambda: run_pod(pod), "config.linux.overhead.memory_limit_in_bytes: -1")
    req = pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="p",
                                              overhead=pb.LinuxContainerResources(cpu_quota=-5))
    expect_invalid(lambda: validation.update_pod_sandbox_resources(req, HOST), "overhead.cpu_quota: -5")


# --- pod sandbox config -------------------------------------------------------------------------

def _set(path: str, value: object) -> Callable[[Any], None]:
    """Set a (nested) field of a config message: _set("linux.cgroup_parent", "..")."""

    def apply(cfg: Any) -> None:
        *parents, last = path.split(".")
        msg = cfg
        for p in parents:
            msg = getattr(msg, p)
        setattr(msg, last, value)
    return apply


def _sysctl(name: str, value: str = "1") -> Callable[[pb.PodSandboxConfig], None]:
    return lambda cfg: cfg.linux.sysctls.__setitem__(name, value)


def _port(**kw: object) -> Callable[[pb.PodSandboxConfig], None]:
    return lambda cfg: cfg.port_mappings.append(pb.PortMapping(**kw))


BAD_POD = [
    (_set("metadata.name", "web\x000"), "config.metadata.name: 'web\\x000' contains a NUL byte"),
    (_set("metadata.namespace", "\x00"), "config.metadata.namespace"),
    (_set("metadata.uid", "u\x00"), "config.metadata.uid"),
    (_set("hostname", "a" * 65), "config.hostname: "),
    (_set("hostname", "web_0"), "config.hostname: 'web_0' is not a hostname"),
    (_set("hostname", "web\x00"), "config.hostname"),
    (_set("hostname", "-web"), "config.hostname"),
    (_set("hostname", "web..x"), "config.hostname"),
    (_set("hostname", "web\nx"), "config.hostname"),
    (_set("log_directory", "../../../../tmp/x"),
     "config.log_directory: '../../../../tmp/x' must be an absolute"),
    (_set("log_directory", "logs"), "config.log_directory: 'logs' must be an absolute path"),
    (_set("log_directory", "/var/log/pods/../../../etc"), "config.log_directory: "),
    (_set("log_directory", "/var/log\x00"), "config.log_directory: "),
    (_set("linux.cgroup_parent", "../../../.."),
     "config.linux.cgroup_parent: '../../../..' must not contain"),
    (_set("linux.cgroup_parent", "/kubepods/../../x"), "config.linux.cgroup_parent: "),
    (_set("linux.cgroup_parent", "/kubepods/./x"), "config.linux.cgroup_parent: "),
    (_set("linux.cgroup_parent", "/kube\x00pods"), "config.linux.cgroup_parent: "),
    (_set("linux.cgroup_parent", "/" + "x" * 256), "config.linux.cgroup_parent: component"),
    (_sysctl("net/ipv4/ip_forward"), "config.linux.sysctls['net/ipv4/ip_forward']: "),
    (_sysctl(".."), "config.linux.sysctls['..']: "),
    (_sysctl("net..ipv4"), "config.linux.sysctls['net..ipv4']: "),
    (_sysctl("kernel.nonexistent_thing"),
     "config.linux.sysctls['kernel.nonexistent_thing']: 'kernel.nonexistent_thing' is not a sysctl of this"),
    (_sysctl("net.ipv4.ip_forward", "1\n2"),
     "config.linux.sysctls['net.ipv4.ip_forward']: '1\\n2' contains a line break"),
    (_sysctl("net.ipv4.ip_forward", "1\x00"), "config.linux.sysctls['net.ipv4.ip_forward']: "),
    (_sysctl("net.ipv4 .ip_forward"), "is not a sysctl name"),
    (_sysctl(".net.ipv4.ip_forward"), "is not a sysctl name"),
    (_sysctl("net.ipv4"), "not a sysctl of this kernel"),
    (_sysctl("net.ipv4.conf.eth0.nonexistent"), "not a sysctl of this kernel"),
    (_sysctl("a\x00b"), "NUL"),
    (_port(container_port=-1), "config.port_mappings[2].container_port: -1 is outside 1..65535"),
    (_port(container_port=0), "config.port_mappings[2].container_port: 0 is outside 1..65535"),
    (_port(container_port=80, host_port=70000),
     "config.port_mappings[2].host_port: 70000 is outside 0 or 1..65535"),
    (_port(container_port=80, host_port=-1), "config.port_mappings[2].host_port: "),
    (_port(container_port=80, protocol=7),
     "config.port_mappings[2].protocol: 7 is not one of TCP, UDP, SCTP"),
    (_port(container_port=80, host_ip="localhost"),
     "config.port_mappings[2].host_ip: 'localhost' is not an IP"),
    (_port(container_port=80, host_ip="1.2.3.4\x00"), "config.port_mappings[2].host_ip: "),
    (lambda c: c.dns_config.servers.append("8.8.8.8\nnameserver 1.1.1.1"), "config.dns_config.servers[1]: "),
    (lambda c: c.dns_config.servers.append("dns.example"),
     "config.dns_config.servers[1]: 'dns.example' is not an IP address"),
    (lambda c: c.dns_config.searches.append("x\nnameserver 1.1.1.1"), "config.dns_config.searches[2]: "),
    (lambda c: c.dns_config.options.append("ndots:1\x00"), "config.dns_config.options[1]: "),
    (lambda c: c.labels.__setitem__("a\x00", "b"), "config.labels['a\\x00']: "),
    (lambda c: c.annotations.__setitem__("a\x00", "b"), "config.annotations['a\\x00']: "),
    (_set("linux.security_context.seccomp.localhost_ref", "/p\x00"),
     "config.linux.security_context.seccomp.localhost_ref: "),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_POD, ids=[m for _, m in BAD_POD])
def test_bad_pod_config(mutate: Callable[[pb.PodSandboxConfig], None], message: str) -> None:
    cfg = kubelet_pod()
    mutate(cfg)
    got = expect_invalid(lambda: run_pod(cfg), message)
    md = cfg.metadata
    assert got.startswith(f"pod sandbox {md.name!r} in namespace {md.namespace!r}: config."), got
    # The same sandbox config sent along with CreateContainer is refused the same way.
    expect_invalid(lambda: create(kubelet_container(), cfg),
                   "container 'app' in pod sandbox 'p1': sandbox_config.", message.removeprefix("config."))


@pytest.mark.parametrize(("parent", "message"), [
    ("/kubepods/burstable", "is not a systemd slice name"),
    ("kubepods--x.slice", "is not a valid systemd slice name"),
    ("-kubepods.slice", "is not a valid systemd slice name"),
    ("../x.slice", "is not a valid systemd slice name"),
    (".slice", "is not a valid systemd slice name"),
])
def test_bad_systemd_parents(parent: str, message: str) -> None:
    cfg = kubelet_pod("systemd")
    cfg.linux.cgroup_parent = parent
    expect_invalid(lambda: run_pod(cfg, "systemd"), "config.linux.cgroup_parent: ", message)


def test_per_interface_sysctls_follow_default() -> None:
    # The pod's eth0 does not exist yet when the sysctls are checked; "default" says whether it will.
    cfg = kubelet_pod()
    cfg.linux.sysctls["net.ipv4.conf.eth0.rp_filter"] = "2"
    run_pod(cfg)


def test_long_values_are_shortened_in_messages() -> None:
    cfg = kubelet_pod()
    cfg.hostname = "x" * 100_000
    assert len(expect_invalid(lambda: run_pod(cfg), "config.hostname: 'xxx")) < 300


# --- container config ---------------------------------------------------------------------------

BAD_CONTAINER = [
    (_set("metadata.name", "a\x00"), "config.metadata.name: "),
    (lambda c: c.command.append("x\x00"), "config.command[2]: "),
    (lambda c: c.args.append("\x00"), "config.args[1]: "),
    (_set("working_dir", "srv"), "config.working_dir: 'srv' must be an absolute path"),
    (_set("working_dir", "/s\x00"), "config.working_dir: "),
    (lambda c: c.envs.append(pb.KeyValue(key="", value=b"x")),
     "config.envs[2].key: an environment variable needs a name"),
    (lambda c: c.envs.append(pb.KeyValue(key="A=B", value=b"x")), "config.envs[2].key: 'A=B' contains '='"),
    (lambda c: c.envs.append(pb.KeyValue(key="A\x00", value=b"x")), "config.envs[2].key: "),
    (lambda c: c.envs.append(pb.KeyValue(key="A", value=b"x\x00y")),
     "config.envs[2].value: b'x\\x00y' contains a NUL byte"),
    (lambda c: c.mounts.append(pb.Mount(container_path="data", host_path="/tmp")),
     "config.mounts[1].container_path: 'data' must be an absolute path"),
    (lambda c: c.mounts.append(pb.Mount(container_path="/data", host_path="relative/src")),
     "config.mounts[1].host_path: 'relative/src' must be an absolute path"),
    (lambda c: c.mounts.append(pb.Mount(container_path="/data", host_path="")),
     "config.mounts[1].host_path: must be an absolute path, got an empty string"),
    (lambda c: c.mounts.append(pb.Mount(container_path="/data\x00", host_path="/tmp")),
     "config.mounts[1].container_path: "),
    (lambda c: c.devices.append(pb.Device(host_path="/dev/null", permissions="rwx")),
     "config.devices[2].permissions: 'rwx' is not within 'rwm'"),
    (lambda c: c.devices.append(pb.Device(host_path="dev/null")), "config.devices[2].host_path: "),
    (lambda c: c.devices.append(pb.Device(host_path="/dev/null", container_path="null")),
     "config.devices[2].container_path: "),
    (lambda c: c.devices.append(pb.Device(host_path="/dev/nu\x00ll")), "config.devices[2].host_path: "),
    (_set("log_path", "/etc/x.log"), "config.log_path: '/etc/x.log' must be relative to its directory"),
    (_set("log_path", "../../../../etc/x"), "config.log_path: '../../../../etc/x' leaves its directory"),
    (_set("log_path", "app/../../x"), "config.log_path: "),
    (_set("log_path", ".."), "config.log_path: "),
    (_set("log_path", "."), "config.log_path: "),
    (_set("log_path", "app/"), "config.log_path: 'app/' names a directory"),
    (_set("log_path", "app/0.log\x00"), "config.log_path: "),
    (lambda c: c.labels.__setitem__("k\x00", "v"), "config.labels['k\\x00']: "),
    (lambda c: c.annotations.__setitem__("k\x00", "v"), "config.annotations['k\\x00']: "),
    (lambda c: c.linux.security_context.masked_paths.append("proc/kcore"),
     "config.linux.security_context.masked_paths[2]: "),
    (lambda c: c.linux.security_context.readonly_paths.append("/proc\x00"),
     "config.linux.security_context.readonly_paths[1]: "),
    (_set("linux.security_context.run_as_username", "root\x00"),
     "config.linux.security_context.run_as_username: "),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_CONTAINER, ids=[m for _, m in BAD_CONTAINER])
def test_bad_container_config(mutate: Callable[[pb.ContainerConfig], None], message: str) -> None:
    cfg = kubelet_container()
    mutate(cfg)
    got = expect_invalid(lambda: create(cfg, kubelet_pod()), message)
    assert got.startswith(f"container {cfg.metadata.name!r} in pod sandbox 'p1': config."), got


@pytest.mark.parametrize("log_path", ["0.log", "app/0.log", "app/./0.log", "a/../0.log", "deep/er/0.log"])
def test_log_paths_inside_pass(log_path: str) -> None:
    cfg = kubelet_container()
    cfg.log_path = log_path
    create(cfg)


# --- exec --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cmd", "timeout", "message"), [
    ([], 0, "cmd: the command is empty"),
    ([""], 0, "cmd: the command is empty"),
    (["sh", "-c", "echo\x00"], 0, "cmd[2]: 'echo\\x00' contains a NUL byte"),
    (["true"], -1, "timeout: -1 is negative"),
])
def test_bad_exec(cmd: list[str], timeout: int, message: str) -> None:
    req = pb.ExecSyncRequest(container_id="c1", cmd=cmd, timeout=timeout)
    expect_invalid(lambda: validation.exec_sync(req), "exec in container 'c1': " + message)


# --- building blocks and the live host ---------------------------------------------------------

def test_cpu_lists() -> None:
    assert cpu_lists.parse_list("0-3,5") == {0, 1, 2, 3, 5}
    assert cpu_lists.parse_list("") == frozenset()
    assert cpu_lists.format_list(frozenset({0, 1, 2, 5, 7, 8})) == "0-2,5,7-8"
    assert cpu_lists.first_missing([(0, 1), (3, 3)], frozenset({0, 1, 3})) is None
    assert cpu_lists.first_missing([(0, 10**12)], frozenset({0, 1})) == 2
    assert cpu_lists.first_missing([(5, 6)], frozenset({0, 1})) == 5
    with pytest.raises(ValueError):
        cpu_lists.parse_list("0-100000000")


def test_page_sizes() -> None:
    assert page_size_bytes("2MB") == 2 << 20 and page_size_bytes("1GB") == 1 << 30
    assert page_size_bytes("64KB") == 64 << 10
    assert page_size_bytes("2mb") is None and page_size_bytes("2") is None


def test_live_host_reads_this_machine() -> None:
    host = LiveHost()
    assert host.cpus and 0 in host.memory_nodes
    assert host.sysctl_exists("kernel.hostname") and not host.sysctl_exists("kernel.nonexistent_thing")
    assert not host.sysctl_exists("kernel")  # a directory is not a sysctl
    if Path("/sys/kernel/mm/hugepages/hugepages-2048kB").exists():
        assert 2 << 20 in host.hugepage_sizes


def test_image_volume_mounts() -> None:
    cfg = kubelet_container()
    cfg.mounts.add(container_path="/models", image=pb.ImageSpec(image="registry.example/models:v1"),
                   image_sub_path="llm", readonly=True)
    validation.create_container(pb.CreateContainerRequest(pod_sandbox_id="p1", config=cfg), "cgroupfs", HOST)
    cfg.mounts.add(container_path="/data", host_path="/srv/data", image_sub_path="x")
    expect_invalid(lambda: validation.create_container(
        pb.CreateContainerRequest(pod_sandbox_id="p1", config=cfg), "cgroupfs", HOST),
        "image_sub_path", "only an image volume")


def _userns(mode: int, uids: list[tuple[int, int, int]], gids: list[tuple[int, int, int]] | None = None,
            **modes: int) -> pb.PodSandboxConfig:
    cfg = kubelet_pod()
    ns = cfg.linux.security_context.namespace_options
    u = ns.userns_options
    u.mode = mode
    for c, h, n in uids:
        u.uids.add(container_id=c, host_id=h, length=n)
    for c, h, n in uids if gids is None else gids:
        u.gids.add(container_id=c, host_id=h, length=n)
    for kind, m in modes.items():
        setattr(ns, kind, m)
    return cfg


def test_kubelet_user_namespaces_pass() -> None:
    """What the kubelet sends for hostUsers: false (65536 ids at a multiple of 65536), and true."""
    run_pod(_userns(pb.POD, [(0, 65536 * 7, 65536)]))
    run_pod(_userns(pb.NODE, []))


@pytest.mark.parametrize(("mode", "uids", "gids", "modes", "message"), [
    (pb.POD, [], None, {}, "userns_options.uids: mode POD needs exactly one mapping, got 0"),
    (pb.POD, [(0, 1000, 10), (10, 5000, 10)], None, {}, "exactly one mapping, got 2"),
    (pb.POD, [(0, 1000, 10)], [], {}, "userns_options.gids: mode POD needs exactly one mapping"),
    (pb.POD, [(1, 1000, 10)], None, {}, "uids[0]: container id 0 must be mapped"),
    (pb.POD, [(0, 1000, 0)], None, {}, "uids[0].length: must be at least 1"),
    (pb.POD, [(0, 4294967290, 10)], None, {}, "past 4294967294"),
    (pb.CONTAINER, [], None, {}, "userns_options.mode: CONTAINER is not supported"),
    (pb.TARGET, [], None, {}, "userns_options.mode: TARGET is not supported"),
    (pb.NODE, [(0, 1000, 10)], None, {}, "mode NODE takes no mappings"),
    (pb.POD, [(0, 1000, 10)], None, {"network": pb.NODE}, "namespace_options.network: a pod with its own"),
    (pb.POD, [(0, 1000, 10)], None, {"ipc": pb.NODE}, "namespace_options.ipc: a pod with its own"),
])
def test_bad_user_namespaces(mode: int, uids: list[tuple[int, int, int]],
                             gids: list[tuple[int, int, int]] | None,
                             modes: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        run_pod(_userns(mode, uids, gids, **modes))
