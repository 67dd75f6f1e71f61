"""The spec builder: containerd's defaults and the setters the CRI layer relies on."""

from __future__ import annotations

import pytest

from oci.builder import (
    ALL_CAPABILITIES,
    BUILDER_OCI_VERSION,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    SpecBuilder,
    default_spec,
)
from oci.spec import Seccomp, Spec, SpecError


def test_default_spec_matches_containerd() -> None:
    spec = SpecBuilder().args("sh").build()
    assert spec.oci_version == BUILDER_OCI_VERSION
    assert spec.root and spec.root.path == "rootfs"
    p = spec.process
    assert p and p.cwd == "/" and (p.user.uid, p.user.gid) == (0, 0)
    assert p.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert p.no_new_privileges is True
    assert p.rlimits and [(r.type, r.soft, r.hard) for r in p.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert p.capabilities
    assert len(DEFAULT_CAPABILITIES) == 14
    for kind in ("bounding", "effective", "permitted"):
        assert getattr(p.capabilities, kind) == list(DEFAULT_CAPABILITIES)
    assert not p.capabilities.inheritable and not p.capabilities.ambient
    lx = spec.linux
    assert lx and [ns.type for ns in lx.namespaces or []] == ["pid", "ipc", "uts", "mount", "network"]
    assert lx.masked_paths == list(DEFAULT_MASKED_PATHS) and "/proc/kcore" in lx.masked_paths
    assert lx.readonly_paths == list(DEFAULT_READONLY_PATHS) and "/proc/sys" in lx.readonly_paths


def test_default_mounts() -> None:
    mounts = {m.destination: m for m in default_spec().mounts or []}
    assert list(mounts) == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert mounts["/proc"].type == "proc"
    assert mounts["/dev"].type == "tmpfs" and "mode=755" in (mounts["/dev"].options or [])
    assert mounts["/dev/pts"].type == "devpts" and "newinstance" in (mounts["/dev/pts"].options or [])
    assert mounts["/dev/shm"].source == "shm" and "mode=1777" in (mounts["/dev/shm"].options or [])
    assert mounts["/dev/mqueue"].type == "mqueue"
    assert mounts["/sys"].type == "sysfs" and "ro" in (mounts["/sys"].options or [])
    assert mounts["/sys/fs/cgroup"].type == "cgroup" and "ro" in (mounts["/sys/fs/cgroup"].options or [])


def test_default_device_rules_deny_then_allow() -> None:
    spec = default_spec()
    assert spec.linux and spec.linux.resources
    rules = spec.linux.resources.devices or []
    assert (rules[0].allow, rules[0].type, rules[0].access) == (False, None, "rwm")
    allowed = {(r.type, r.major, r.minor) for r in rules[1:] if r.allow}
    for dev in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, None)]:
        assert ("c", *dev) in allowed, dev


def test_builder_does_not_share_state_between_builds() -> None:
    b = SpecBuilder().args("a")
    first = b.build()
    b.args("b").hostname("x")
    assert first.process and first.process.args == ["a"] and first.hostname is None


def test_env_overrides_in_place() -> None:
    spec = SpecBuilder().args("sh").env({"A": "1"}).env(["PATH=/bin", "B=2"]).env({"A": "3"}).build()
    assert spec.process and spec.process.env == ["PATH=/bin", "A=3", "B=2"]
    assert SpecBuilder().args("x").env({"C": "1"}, replace=True).build().process.env == ["C=1"]  # type: ignore


def test_user_cwd_terminal_rlimit() -> None:
    spec = (SpecBuilder().args("sh").user(1000, 1000, [2000], umask=0o022).cwd("/work")
            .terminal(True, height=24, width=80).rlimit("nofile", 10, 20).rlimit("RLIMIT_NOFILE", 30, 40)
            .build())
    p = spec.process
    assert p and (p.user.uid, p.user.gid, p.user.additional_gids, p.user.umask) == (1000, 1000, [2000], 0o022)
    assert p.cwd == "/work" and p.terminal and p.console_size and p.console_size.width == 80
    assert [(r.type, r.soft, r.hard) for r in p.rlimits or []] == [("RLIMIT_NOFILE", 30, 40)]


def test_capability_setters() -> None:
    spec = SpecBuilder().args("x").capabilities(["net_admin", "CAP_KILL"]).build()
    assert spec.process and spec.process.capabilities
    assert spec.process.capabilities.effective == ["CAP_NET_ADMIN", "CAP_KILL"]
    spec = SpecBuilder().args("x").add_capabilities("SYS_ADMIN").drop_capabilities("CAP_MKNOD").build()
    caps = spec.process.capabilities  # type: ignore[union-attr]
    assert caps and "CAP_SYS_ADMIN" in (caps.bounding or []) and "CAP_MKNOD" not in (caps.effective or [])
    amb = SpecBuilder().args("x").capabilities(["CAP_NET_BIND_SERVICE"], ambient=True).build()
    assert amb.process and amb.process.capabilities
    assert amb.process.capabilities.ambient == ["CAP_NET_BIND_SERVICE"]


def test_mounts_replace_by_destination() -> None:
    spec = (SpecBuilder().args("x").add_mount("/data", "tmpfs", "tmpfs", ["size=1m"])
            .bind_mount("/host", "/data/", readonly=True, propagation="rslave").remove_mount("/dev/mqueue")
            .build())
    mounts = {m.destination: m for m in spec.mounts or []}
    assert "/dev/mqueue" not in mounts
    assert [m.destination for m in spec.mounts or []].count("/data/") == 1 and "/data" not in mounts
    assert mounts["/data/"].options == ["rbind", "rslave", "ro"] and mounts["/data/"].source == "/host"


def test_namespaces() -> None:
    spec = (SpecBuilder().args("x").namespace("network", "/var/run/netns/pod").without_namespace("ipc")
            .namespace("cgroup").user_namespace([(0, 1000, 1)], [(0, 1000, 1)]).build())
    assert spec.linux
    types = {ns.type: ns.path for ns in spec.linux.namespaces or []}
    assert types == {"pid": None, "uts": None, "mount": None, "network": "/var/run/netns/pod", "cgroup": None,
                     "user": None}
    assert spec.linux.uid_mappings and spec.linux.uid_mappings[0].host_id == 1000


def test_resources() -> None:
    spec = (SpecBuilder().args("x").memory(64 << 20, swap=128 << 20)
            .cpu(shares=512, quota=1000, period=100000).cpuset("0-1", "0").pids(10)
            .hugepage_limit("2MB", 0).unified("memory.high", "max").build())
    r = spec.linux.resources  # type: ignore[union-attr]
    assert r and r.memory and (r.memory.limit, r.memory.swap) == (64 << 20, 128 << 20)
    assert r.cpu and (r.cpu.shares, r.cpu.quota, r.cpu.period, r.cpu.cpus, r.cpu.mems) == (
        512, 1000, 100000, "0-1", "0")
    assert r.pids and r.pids.limit == 10
    assert r.hugepage_limits and r.hugepage_limits[0].page_size == "2MB"
    assert r.unified == {"memory.high": "max"}
    assert r.devices and r.devices[0].allow is False  # device rules kept


def test_devices_hooks_misc() -> None:
    spec = (SpecBuilder().args("x").add_device("/dev/fuse", "c", 10, 229).hook("createContainer", "/bin/hook")
            .hook("poststop", "/bin/hook2", ["hook2", "a"], timeout=3).sysctl("net.ipv4.ip_forward", "1")
            .annotation("k", "v").hostname("h").cgroups_path("/pods/x").oom_score_adj(10)
            .seccomp(Seccomp(default_action="SCMP_ACT_ALLOW")).rootfs("/abs/rootfs", readonly=True).build())
    assert spec.linux and spec.linux.devices and spec.linux.devices[0].path == "/dev/fuse"
    assert spec.linux.resources and any(d.major == 10 and d.minor == 229 and d.allow
                                        for d in spec.linux.resources.devices or [])
    assert spec.hooks and spec.hooks.create_container and spec.hooks.poststop
    assert spec.hooks.poststop[0].timeout == 3
    assert spec.linux.sysctl == {"net.ipv4.ip_forward": "1"} and spec.annotations == {"k": "v"}
    assert spec.root and spec.root.readonly is True and spec.linux.cgroups_path == "/pods/x"
    with pytest.raises(SpecError, match="unknown hook kind"):
        SpecBuilder().hook("preStart", "/x")


def test_privileged() -> None:
    spec = SpecBuilder().args("x").privileged().build()
    assert spec.process and spec.process.capabilities
    assert spec.process.capabilities.bounding == list(ALL_CAPABILITIES)
    assert spec.linux and spec.linux.masked_paths is None and spec.linux.readonly_paths is None
    assert spec.linux.resources and [(d.allow, d.access) for d in spec.linux.resources.devices or []] == [
        (True, "rwm")]
    sys_mount = next(m for m in spec.mounts or [] if m.destination == "/sys")
    assert "ro" not in (sys_mount.options or [])


def test_build_validates() -> None:
    with pytest.raises(SpecError, match="process.args"):
        SpecBuilder().build()
    with pytest.raises(SpecError, match="unknown namespace"):
        SpecBuilder().args("x").namespace("bogus").build()
    assert SpecBuilder().build(check=False).process is not None


def test_builder_from_existing_spec_round_trips() -> None:
    base = SpecBuilder().args("x").build().to_dict()
    base["linux"]["futureField"] = {"a": 1}
    spec = SpecBuilder(Spec.from_dict(base)).hostname("h").build()
    assert spec.to_dict()["linux"]["futureField"] == {"a": 1}
