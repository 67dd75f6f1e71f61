"""CRI ContainerConfig -> OCI spec, without root: a fake rootfs with passwd/group files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cri_shim.containers.host_limits import HostLimits, limits_from
from cri_shim.containers.spec_gen import ImageContext, PodContext, build_spec
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:app\naudio:x:29:app,other\n")
    return r


POD = PodContext(id="pod1", hostname="web-0", netns_path="/run/x/net", ipcns_path="/run/x/ipc",
                 utsns_path="/run/x/uts", hosts_path="/run/x/hosts", resolv_path="/run/x/resolv.conf",
                 hostname_path="/run/x/hostname", shm_path="/run/x/shm", cgroup_parent="/kubepods/podA",
                 name="web-0", namespace="default", uid="u1")
IMAGE = ImageContext("registry/busybox:1", {"Entrypoint": ["/bin/ep"], "Cmd": ["default"],
                                             "Env": ["PATH=/bin", "A=image"], "WorkingDir": "/srv",
                                             "User": "app"})


def cfg(**kw) -> pb.ContainerConfig:
    c = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c1"), image=pb.ImageSpec(image="busybox"))
    for k, v in kw.items():
        if k == "envs":
            c.envs.extend(pb.KeyValue(key=a, value=b.encode()) for a, b in v)
        elif k in ("command", "args"):
            getattr(c, k).extend(v)
        else:
            setattr(c, k, v)
    return c


# A daemon like the one on a host where root lacks CAP_SYS_RESOURCE and oom_score_adj is 0.
LIMITED = HostLimits(capabilities=("CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"),
                     min_oom_score_adj=0)


def spec_of(c: pb.ContainerConfig, rootfs: Path, image: ImageContext = IMAGE, **kw) -> dict:
    kw.setdefault("limits", HostLimits())
    return json.loads(build_spec(c, "ctr1", POD, image, rootfs, **kw).to_json())


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ([], [], ["/bin/ep", "default"]),
        ([], ["x"], ["/bin/ep", "x"]),
        (["/bin/sh"], [], ["/bin/sh"]),
        (["/bin/sh"], ["-c", "true"], ["/bin/sh", "-c", "true"]),
    ],
)
def test_command_rules(rootfs: Path, command, args, expected) -> None:
    assert spec_of(cfg(command=command, args=args), rootfs)["process"]["args"] == expected


def test_no_command_is_invalid(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        build_spec(cfg(), "c", POD, ImageContext("img", {}), rootfs)


def test_env_merge_and_binary_value(rootfs: Path) -> None:
    env = spec_of(cfg(envs=[("A", "cri"), ("B", "2")]), rootfs)["process"]["env"]
    assert env == ["HOSTNAME=web-0", "PATH=/bin", "A=cri", "B=2"]


def test_image_user_name_resolves_with_groups(rootfs: Path) -> None:
    user = spec_of(cfg(), rootfs)["process"]["user"]
    # The primary gid leads the process's groups, as containerd and CRI-O set them.
    assert (user["uid"], user["gid"], user["additionalGids"]) == (1000, 1001, [1001, 10, 29])


def test_run_as_user_and_group_override(rootfs: Path) -> None:
    c = cfg()
    c.linux.security_context.run_as_user.value = 1000
    c.linux.security_context.run_as_group.value = 5
    c.linux.security_context.supplemental_groups.extend([77])
    user = spec_of(c, rootfs)["process"]["user"]
    assert (user["uid"], user["gid"], user["additionalGids"]) == (1000, 5, [5, 10, 29, 77])
    c.linux.security_context.supplemental_groups_policy = pb.Strict
    assert spec_of(c, rootfs)["process"]["user"]["additionalGids"] == [5, 77]


def test_run_as_group_without_user_is_invalid(rootfs: Path) -> None:
    c = cfg()
    c.linux.security_context.run_as_group.value = 1002
    with pytest.raises(InvalidArgument, match="run_as_group 1002 is set without run_as_user"):
        spec_of(c, rootfs)
    c.linux.security_context.run_as_username = "app"
    assert spec_of(c, rootfs)["process"]["user"]["gid"] == 1002


def test_unknown_username_is_invalid(rootfs: Path) -> None:
    c = cfg()
    c.linux.security_context.run_as_username = "ghost"
    with pytest.raises(InvalidArgument, match="'ghost' not found"):
        spec_of(c, rootfs)


def test_numeric_uid_not_in_passwd(rootfs: Path) -> None:
    user = spec_of(cfg(), rootfs, ImageContext("i", {"Cmd": ["x"], "User": "4242"}))["process"]["user"]
    assert (user["uid"], user["gid"]) == (4242, 0)


def test_namespaces_join_pod(rootfs: Path) -> None:
    ns = {n["type"]: n.get("path") for n in spec_of(cfg(), rootfs)["linux"]["namespaces"]}
    assert ns == {"network": "/run/x/net", "ipc": "/run/x/ipc", "uts": "/run/x/uts", "pid": None,
                  "mount": None}


def test_mounts_pod_files_and_cri_mounts(rootfs: Path, tmp_path: Path) -> None:
    c = cfg()
    c.mounts.append(pb.Mount(container_path="/data", host_path=str(tmp_path), readonly=True,
                             propagation=pb.PROPAGATION_HOST_TO_CONTAINER))
    mounts = {m["destination"]: m for m in spec_of(c, rootfs)["mounts"]}
    assert mounts["/etc/hosts"]["source"] == "/run/x/hosts"
    assert mounts["/dev/shm"]["source"] == "/run/x/shm"
    assert mounts["/data"]["options"] == ["rbind", "rslave", "ro"]


def test_missing_mount_source(rootfs: Path) -> None:
    # Relative paths are refused earlier, by cri_shim.validation (tests/unit/test_validation.py).
    c = cfg()
    c.mounts.append(pb.Mount(container_path="/data", host_path="/nonexistent/src"))
    with pytest.raises(InvalidArgument, match="host_path /nonexistent/src does not exist"):
        spec_of(c, rootfs)


def test_capabilities_add_drop(rootfs: Path) -> None:
    c = cfg()
    c.linux.security_context.capabilities.add_capabilities.append("NET_ADMIN")
    c.linux.security_context.capabilities.drop_capabilities.extend(["CHOWN", "cap_kill"])
    caps = spec_of(c, rootfs)["process"]["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" not in caps
    c.linux.security_context.capabilities.add_capabilities.append("BOGUS")
    with pytest.raises(InvalidArgument, match="CAP_BOGUS"):
        spec_of(c, rootfs)


def test_privileged(rootfs: Path) -> None:
    c = cfg()
    c.linux.security_context.privileged = True
    s = spec_of(c, rootfs)
    assert "CAP_SYS_ADMIN" in s["process"]["capabilities"]["bounding"]
    assert "maskedPaths" not in s["linux"] and "seccomp" not in s["linux"]


def test_all_capabilities_are_what_the_daemon_holds(rootfs: Path) -> None:
    c = cfg()
    c.linux.security_context.privileged = True
    caps = spec_of(c, rootfs, limits=LIMITED)["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(LIMITED.capabilities)
    c = cfg()
    c.linux.security_context.capabilities.add_capabilities.append("ALL")
    c.linux.security_context.capabilities.drop_capabilities.append("KILL")
    assert spec_of(c, rootfs, limits=LIMITED)["process"]["capabilities"]["effective"] == [
        "CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]


def test_limits_read_from_proc_status() -> None:
    status = "Name:\tx\nCapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n"
    limits = limits_from(status, -500)
    assert "CAP_SYS_RESOURCE" not in limits.capabilities and "CAP_SYS_ADMIN" in limits.capabilities
    assert len(limits.capabilities) == 40 and limits.min_oom_score_adj == -500
    assert limits.clamp_oom_score_adj(-997) == -500 and limits.clamp_oom_score_adj(1000) == 1000
    full = limits_from("CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n", 0)
    assert full.min_oom_score_adj == -1000 and len(full.capabilities) == 41


def test_oom_score_adj_is_clamped_to_what_the_daemon_may_set(rootfs: Path) -> None:
    c = cfg()
    c.linux.resources.oom_score_adj = -997  # a Guaranteed pod
    assert spec_of(c, rootfs, limits=LIMITED)["process"]["oomScoreAdj"] == 0
    assert spec_of(c, rootfs)["process"]["oomScoreAdj"] == -997


def test_recursive_read_only_mounts(rootfs: Path, tmp_path: Path) -> None:
    c = cfg()
    c.mounts.append(pb.Mount(container_path="/data", host_path=str(tmp_path), readonly=True,
                             recursive_read_only=True))
    mounts = {m["destination"]: m for m in spec_of(c, rootfs, recursive_read_only=True)["mounts"]}
    assert mounts["/data"]["options"] == ["rbind", "rprivate", "ro", "rro"]
    with pytest.raises(InvalidArgument, match="'/data': recursive_read_only is not supported"):
        spec_of(c, rootfs, recursive_read_only=False)
    c.mounts[0].propagation = pb.PROPAGATION_BIDIRECTIONAL
    with pytest.raises(InvalidArgument, match="needs private propagation, not PROPAGATION_BIDIRECTIONAL"):
        spec_of(c, rootfs, recursive_read_only=True)
    c.mounts[0].propagation = pb.PROPAGATION_PRIVATE
    c.mounts[0].readonly = False
    with pytest.raises(InvalidArgument, match="recursive_read_only needs readonly"):
        spec_of(c, rootfs, recursive_read_only=True)


def test_seccomp_runtime_default_and_localhost(rootfs: Path, tmp_path: Path) -> None:
    c = cfg()
    c.linux.security_context.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    sec = spec_of(c, rootfs)["linux"]["seccomp"]
    denied = {n for s in sec["syscalls"] for n in s["names"]}
    assert sec["defaultAction"] == "SCMP_ACT_ALLOW" and {"mount", "kexec_load", "bpf"} <= denied
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}))
    c.linux.security_context.seccomp.profile_type = pb.SecurityProfile.Localhost
    c.linux.security_context.seccomp.localhost_ref = str(prof)
    assert spec_of(c, rootfs)["linux"]["seccomp"]["syscalls"][0]["names"] == ["mkdir"]
    c.linux.security_context.seccomp.localhost_ref = "/nonexistent.json"
    with pytest.raises(InvalidArgument, match="does not exist"):
        spec_of(c, rootfs)


def test_resources_and_cgroup_path(rootfs: Path) -> None:
    c = cfg()
    r = c.linux.resources
    r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes = 512, 50000, 100000, 64 << 20
    r.cpuset_cpus, r.oom_score_adj = "0", 500
    s = spec_of(c, rootfs)
    res = s["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}
    assert res["memory"]["limit"] == 64 << 20
    assert s["process"]["oomScoreAdj"] == 500
    assert s["linux"]["cgroupsPath"] == "/kubepods/podA/ctr1"


def test_systemd_cgroups_path(rootfs: Path) -> None:
    pod = dataclasses.replace(POD, cgroup_parent="kubepods-besteffort-podA.slice")
    image = ImageContext("img", {"Cmd": ["/bin/sh"]})
    spec = build_spec(cfg(), "ctr1", pod, image, rootfs, limits=HostLimits(), cgroup_driver="systemd")
    assert spec.linux is not None
    assert spec.linux.cgroups_path == "kubepods-besteffort-podA.slice:cri-shim:ctr1"
    with pytest.raises(InvalidArgument):  # a cgroupfs path is no slice
        build_spec(cfg(), "ctr1", POD, image, rootfs, limits=HostLimits(), cgroup_driver="systemd")


def test_readonly_rootfs_and_cwd(rootfs: Path) -> None:
    c = cfg(working_dir="/work")
    c.linux.security_context.readonly_rootfs = True
    s = spec_of(c, rootfs)
    assert s["root"]["readonly"] is True and s["process"]["cwd"] == "/work"
    assert spec_of(cfg(), rootfs)["process"]["cwd"] == "/srv"


def test_runtime_default_seccomp_follows_capabilities() -> None:
    from cri_shim.containers.seccomp_profiles import runtime_default

    def denied(caps: list[str]) -> dict[str, int]:
        prof = runtime_default(caps)
        assert prof.default_action == "SCMP_ACT_ALLOW"
        return {n: s.errno_ret or 0 for s in prof.syscalls or [] for n in s.names}

    plain = denied(["CAP_CHOWN"])
    assert plain["mount"] == 1 and plain["ptrace"] == 1 and plain["bpf"] == 1 and plain["clone3"] == 38
    admin = denied(["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])
    assert "mount" not in admin and "unshare" not in admin and "ptrace" not in admin
    assert admin["kexec_load"] == 1 and admin["init_module"] == 1
