"""Each namespace observed from inside the container."""

from __future__ import annotations

import os

import pytest

from oci.builder import SpecBuilder
from oci.errors import OCIRuntimeError
from tests.conformance.conftest import Exit, Harness

pytestmark = pytest.mark.root

NS_FILES = {"pid": "pid", "ipc": "ipc", "uts": "uts", "mount": "mnt", "network": "net", "cgroup": "cgroup",
            "user": "user"}


def _inside_ns(h: Harness, builder_args: list[str] | None = None, **_: object) -> dict[str, str]:
    script = "; ".join(f"echo {f}=$(readlink /proc/self/ns/{f})" for f in NS_FILES.values())
    result = h.run(h.spec("sh", "-c", script))
    assert result.code == 0, result
    return dict(line.split("=", 1) for line in result.stdout.split())


def _host_ns(name: str) -> str:
    return os.readlink(f"/proc/self/ns/{name}")


def test_default_namespaces_are_new(h: Harness) -> None:
    inside = _inside_ns(h)
    for ns in ("pid", "ipc", "uts", "mnt", "net"):
        assert inside[ns] != _host_ns(ns), f"{ns} namespace shared with the host"
    # not requested: shared with the runtime
    assert inside["user"] == _host_ns("user")
    assert inside["cgroup"] == _host_ns("cgroup")


def test_pid_namespace_init_is_pid_1(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "echo $$; ls -d /proc/[0-9]* | wc -l"))
    pid, count = result.stdout.split()
    assert pid == "1" and int(count) <= 3, result


def test_cgroup_namespace_when_requested(h: Harness) -> None:
    b = h.spec("sh", "-c", "readlink /proc/self/ns/cgroup; cat /proc/self/cgroup").namespace("cgroup")
    result = h.run(b)
    lines = result.stdout.split()
    assert lines[0] != _host_ns("cgroup"), result
    # inside its own cgroup namespace the container sees itself at the root
    assert all(line.endswith(":/") for line in lines[1:]), result


def test_cgroup_namespace_in_a_user_namespace(h: Harness) -> None:
    """Rooted at the container's cgroup in every hierarchy, the cgroup2 one included, which the
    runtime joins differently when a user namespace is made (pyrunc: the init is moved there by
    the parent before it makes the cgroup namespace)."""
    b = h.spec("sh", "-c", "readlink /proc/self/ns/cgroup; cat /proc/self/cgroup").namespace("cgroup")
    b.user_namespace([(0, 100000, 65536)], [(0, 100000, 65536)])
    b.remove_mount("/sys/fs/cgroup")
    h.reachable_by_mapped_root()
    result = h.run(b)
    lines = result.stdout.split()
    assert lines[0] != _host_ns("cgroup"), result
    assert len(lines) > 1 and all(line.endswith(":/") for line in lines[1:]), result


def test_join_namespace_by_path(h: Harness) -> None:
    b = h.spec("sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; hostname")
    # our own namespaces: the runtime is our child, so it may open them
    me = os.getpid()
    b.namespace("network", f"/proc/{me}/ns/net").namespace("uts", f"/proc/{me}/ns/uts")
    result = h.run(b)
    net, uts, hostname = result.stdout.split()
    assert net == _host_ns("net") and uts == _host_ns("uts"), result
    assert hostname == os.uname().nodename


def test_host_network_when_namespace_omitted(h: Harness) -> None:
    result = h.run(h.spec("readlink", "/proc/self/ns/net").without_namespace("network"))
    assert result.stdout.strip() == _host_ns("net"), result


def test_hostname(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "hostname; cat /proc/sys/kernel/hostname").hostname("conformance"))
    assert result.stdout.split() == ["conformance", "conformance"], result


@pytest.mark.known_failure("runc", "runc 1.1 ignores domainname (support arrived in runc 1.2)")
def test_domainname(h: Harness) -> None:
    b = h.spec("cat", "/proc/sys/kernel/domainname").hostname("conformance").domainname("example.test")
    result = h.run(b)
    assert result.stdout.split() == ["example.test"], result


def test_network_namespace_has_only_loopback(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "ls /sys/class/net"))
    assert result.stdout.split() == ["lo"], result


def test_new_network_namespace_has_loopback_up(h: Harness) -> None:
    """A runtime sets lo up in a network namespace it creates: podman --network none relies on
    it (its pod's containers talk over 127.0.0.1)."""
    result = h.run(h.spec("cat", "/sys/class/net/lo/flags"))
    assert int(result.stdout.strip(), 16) & 1, result  # IFF_UP


def test_ipc_namespace_is_empty(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "cat /proc/sysvipc/shm | wc -l"))
    assert result.stdout.strip() == "1", result  # header only


def test_user_namespace_with_mappings(h: Harness) -> None:
    b = h.spec("sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user")
    b.user_namespace([(0, 100000, 65536)], [(0, 100000, 65536)])
    # cgroupfs cannot be mounted from a user namespace that does not own the cgroup namespace
    b.remove_mount("/sys/fs/cgroup")
    h.reachable_by_mapped_root()
    result = h.run(b)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"], result
    assert lines[1].split() == ["0", "100000", "65536"], result
    assert lines[2] == "0" and lines[3] != _host_ns("user"), result


@pytest.mark.known_failure("runc", "runc 1.1 has no idmapped mounts (runtime-spec 1.2 mounts[].uidMappings)")
def test_idmapped_bind_mount_in_user_namespace(h: Harness) -> None:
    """A volume owned by host root appears owned by the container's root through an idmapped
    mount, and a file the container creates there is owned by host root on disk, not by the
    container's host uid (no chown of the volume anywhere)."""
    vol = h.tmp / "vol"
    vol.mkdir()
    (vol / "data").write_text("hello\n")
    os.chown(vol / "data", 7, 8)
    vol.chmod(0o755)
    b = h.spec("sh", "-c", "stat -c '%u:%g' /home/app /home/app/data; cat /home/app/data; "
                           "touch /home/app/made; id -u")
    b.user_namespace([(0, 100000, 65536)], [(0, 100000, 65536)])
    b.remove_mount("/sys/fs/cgroup")
    b.bind_mount(str(vol), "/home/app", idmap=([(0, 100000, 65536)], [(0, 100000, 65536)]))
    h.reachable_by_mapped_root()
    result = h.run(b)
    assert result.code == 0, result
    assert result.stdout.splitlines()[:4] == ["0:0", "7:8", "hello", "0"], result
    made = (vol / "made").stat()
    assert (made.st_uid, made.st_gid) == (0, 0), result


@pytest.mark.known_failure("runc", "runc 1.1 ignores mounts[].uidMappings, with or without a user namespace")
@pytest.mark.known_failure("crun", "crun 1.8.1 ignores mounts[].uidMappings without a user namespace")
def test_idmapped_mount_needs_a_user_namespace(h: Harness) -> None:
    vol = h.tmp / "vol"
    vol.mkdir()
    b = h.spec("true")
    b.bind_mount(str(vol), "/vol", idmap=([(0, 100000, 65536)], [(0, 100000, 65536)]))
    with pytest.raises(OCIRuntimeError, match="user namespace"):
        h.run(b)


def _run_in_its_own_cgroups(h: Harness, b: SpecBuilder) -> Exit:
    """Create the container, check that its init is in its own cgroups in every hierarchy,
    start it and return how it ended (successfully)."""
    c = h.create(b)
    assert c.pid
    with open(f"/proc/{c.pid}/cgroup") as f:
        lines = f.read().splitlines()
    assert lines and all(line.split(":", 2)[2] == c.cgroups_path for line in lines), lines
    h.rt.start(c.id)
    result = h.wait(c)
    assert result.code == 0, result
    return result


def test_join_another_containers_cgroup_namespace(h: Harness) -> None:
    """A container joining a cgroup namespace rooted elsewhere (another container's) still ends
    up in its own cgroups: pyrunc's set-up process cannot clone3 into a cgroup outside the
    namespace it joined, so its parent moves the init there instead."""
    first = h.start(h.spec("sleep", "100").namespace("cgroup"))
    assert first.pid
    b = h.spec("sh", "-c", "cat /proc/self/cgroup").namespace("cgroup", f"/proc/{first.pid}/ns/cgroup")
    result = _run_in_its_own_cgroups(h, b)
    # seen from the first container's namespace, the second one's cgroups lie outside its root
    assert all("/.." in line for line in result.stdout.splitlines()), result


def test_join_another_containers_pid_namespace(h: Harness) -> None:
    """A pod's shared process namespace: the second container's process lives in the first
    one's pid namespace (not as its pid 1) and in its own cgroups. pyrunc enters a pid namespace
    given by path in its set-up process, before forking the init, which then sees the first
    container's processes."""
    first = h.start(h.spec("sleep", "100"))
    assert first.pid
    b = h.spec("sh", "-c", "readlink /proc/self/ns/pid; echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    b.namespace("pid", f"/proc/{first.pid}/ns/pid")
    result = _run_in_its_own_cgroups(h, b)
    ns, pid, pid1 = result.stdout.split("\n", 2)
    assert ns == os.readlink(f"/proc/{first.pid}/ns/pid"), result
    assert int(pid) != 1 and pid1.strip() == "sleep 100", result
