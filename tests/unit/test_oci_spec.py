"""The runtime-spec model: round trips, unknown fields, type errors, validation."""

from __future__ import annotations

import json

import pytest

from oci.spec import (
    CPU,
    Hook,
    Hooks,
    Linux,
    Memory,
    Mount,
    Namespace,
    Process,
    Resources,
    Root,
    Spec,
    SpecError,
    validate,
)

FULL = {
    "ociVersion": "1.2.0",
    "process": {
        "terminal": True,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 1, "gid": 2, "umask": 18, "additionalGids": [5, 6], "futureUserField": "x"},
        "args": ["sh"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "inheritable": [],
                         "permitted": ["CAP_KILL"], "ambient": []},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
        "apparmorProfile": "runtime/default",
        "oomScoreAdj": 100,
        "selinuxLabel": "system_u:system_r:container_t:s0",
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0},
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "h",
    "domainname": "d",
    "mounts": [{"destination": "/data", "type": "bind", "source": "/src",
                "options": ["rbind", "rslave", "ro"],
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}],
    "hooks": {k: [{"path": "/bin/true", "args": ["true"], "env": ["A=b"], "timeout": 5}]
              for k in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                        "poststop")},
    "annotations": {"io.kubernetes.cri.container-type": "container"},
    "linux": {
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "resources": {
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
            "memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 1 << 30, "kernelTCP": 0,
                       "swappiness": 0, "disableOOMKiller": False, "useHierarchy": True,
                       "checkBeforeUpdate": True},
            "cpu": {"shares": 1024, "quota": 50000, "burst": 0, "period": 100000, "realtimeRuntime": 0,
                    "realtimePeriod": 0, "cpus": "0-1", "mems": "0", "idle": 0},
            "pids": {"limit": 100},
            "blockIO": {"weight": 500, "leafWeight": 300,
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 500}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                        "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
                        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 1}]},
            "unified": {"memory.high": "max"},
        },
        "cgroupsPath": "/k8s/pod/ctr",
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/x"}, {"type": "user"}],
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 438, "uid": 0,
                     "gid": 0}],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                    "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                  "args": [{"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]},
        "rootfsPropagation": "rslave",
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
        "mountLabel": "system_u:object_r:container_file_t:s0",
        "intelRdt": {"closID": "guaranteed", "l3CacheSchema": "L3:0=7f"},
    },
    "vm": {"hypervisor": {"path": "/usr/bin/qemu"}},
}


def test_full_document_round_trips_exactly() -> None:
    spec = Spec.from_dict(json.loads(json.dumps(FULL)))
    assert spec.to_dict() == FULL
    assert Spec.from_json(spec.to_json()).to_dict() == FULL


def test_typed_access() -> None:
    spec = Spec.from_dict(FULL)
    assert spec.process and spec.process.user.additional_gids == [5, 6]
    assert spec.linux and spec.linux.resources and spec.linux.resources.block_io
    assert spec.linux.resources.block_io.throttle_read_iops_device[0].rate == 10  # type: ignore[index]
    assert spec.linux.resources.memory and spec.linux.resources.memory.kernel_tcp == 0
    assert spec.linux.namespace("network") == Namespace(type="network", path="/var/run/netns/x")
    assert spec.linux.namespace("ipc") is None
    assert spec.hooks and spec.hooks.create_container and spec.hooks.create_container[0].timeout == 5
    assert spec.linux.intel_rdt == {"closID": "guaranteed", "l3CacheSchema": "L3:0=7f"}


def test_unknown_fields_kept_at_every_level() -> None:
    spec = Spec.from_dict(FULL)
    assert spec.extra == {"vm": {"hypervisor": {"path": "/usr/bin/qemu"}}}
    assert spec.process and spec.process.user.extra == {"futureUserField": "x"}
    doc = {"ociVersion": "1.2.0", "root": {"path": "r", "z": 1},
           "linux": {"resources": {"memory": {"limit": 5, "newKnob": 7}, "cpu": {"x": [1]}}, "new": {}}}
    assert Spec.from_dict(doc).to_dict() == doc


def test_absent_and_empty_stay_distinct() -> None:
    doc = {"ociVersion": "1.0.2", "mounts": [], "linux": {"maskedPaths": []}}
    assert Spec.from_dict(doc).to_dict() == doc
    assert "mounts" not in Spec.from_dict({"ociVersion": "1.0.2"}).to_dict()


def test_type_errors_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"linux\.namespaces\[1\]\.type: expected a string"):
        Spec.from_dict({"linux": {"namespaces": [{"type": "pid"}, {"type": 3}]}})
    with pytest.raises(SpecError, match=r"process\.user\.uid: expected an integer"):
        Spec.from_dict({"process": {"user": {"uid": "0", "gid": 0}}})
    with pytest.raises(SpecError, match=r"process\.user\.uid: expected an integer"):
        Spec.from_dict({"process": {"user": {"uid": True, "gid": 0}}})
    with pytest.raises(SpecError, match=r"mounts: expected an array"):
        Spec.from_dict({"mounts": {}})
    with pytest.raises(SpecError, match=r"mounts\[0\]\.destination: required field is missing"):
        Spec.from_dict({"mounts": [{"type": "tmpfs"}]})


def test_malformed_json() -> None:
    with pytest.raises(SpecError, match="malformed JSON"):
        Spec.from_json('{"ociVersion": ')
    with pytest.raises(SpecError, match="expected an object"):
        Spec.from_json("[]")


def test_save_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = Spec.from_dict(FULL)
    spec.save(tmp_path / "config.json")
    assert Spec.load(tmp_path / "config.json").to_dict() == FULL
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def _valid() -> Spec:
    return Spec(root=Root(path="rootfs"), process=Process(args=["sh"]),
                linux=Linux(namespaces=[Namespace(type="pid")]))


def test_validate_accepts_minimal_and_full() -> None:
    validate(_valid())
    full = Spec.from_dict(FULL)
    validate(full)


@pytest.mark.parametrize("breakage,message", [
    (lambda s: setattr(s, "root", None), "root.path: missing"),
    (lambda s: s.linux.namespaces.append(Namespace(type="bogus")), "unknown namespace type 'bogus'"),
    (lambda s: s.linux.namespaces.append(Namespace(type="pid")), "duplicate namespace 'pid'"),
    (lambda s: s.linux.namespaces.append(Namespace(type="net", path="/x")), "unknown namespace type 'net'"),
    (lambda s: setattr(s, "mounts", [Mount(destination="")]), r"mounts\[0\]\.destination: missing"),
    (lambda s: setattr(s, "mounts", [Mount(destination="rel", type="tmpfs")]), "must be absolute"),
    (lambda s: setattr(s, "mounts", [Mount(destination="/x")]), "neither a type nor a bind option"),
    (lambda s: setattr(s.process, "args", []), "process.args"),
    (lambda s: setattr(s.process, "cwd", "tmp"), "process.cwd"),
    (lambda s: setattr(s.process, "env", ["NOEQUALS"]), "not KEY=VALUE"),
    (lambda s: setattr(s, "hooks", Hooks(poststop=[Hook(path="true")])), r"hooks\.poststop\[0\]\.path"),
    (lambda s: setattr(s.linux, "rootfs_propagation", "sideways"), "unknown propagation"),
    (lambda s: setattr(s.linux, "uid_mappings", [{"containerID": 0}]), "need a user namespace"),
    (lambda s: setattr(s, "oci_version", "2.0.0"), "unsupported version"),
])
def test_validate_rejects(breakage, message: str) -> None:  # type: ignore[no-untyped-def]
    spec = _valid()
    breakage(spec)
    with pytest.raises(SpecError, match=message):
        validate(spec)


def test_validate_reports_every_problem() -> None:
    spec = _valid()
    spec.root = None
    assert spec.linux and spec.linux.namespaces is not None
    spec.linux.namespaces.append(Namespace(type="bogus"))
    with pytest.raises(SpecError) as info:
        validate(spec)
    assert "root.path" in str(info.value) and "bogus" in str(info.value)


def test_resources_standalone_for_update() -> None:
    r = Resources(memory=Memory(limit=1 << 20), cpu=CPU(quota=1000, period=100000))
    assert r.to_dict() == {"memory": {"limit": 1 << 20}, "cpu": {"quota": 1000, "period": 100000}}
    assert Resources.from_dict(r.to_dict()) == r
