"""The seccomp recorder's pure parts: the annotation, syscall names, the profile document."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri_shim import config
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument
from cri_shim.seccomp_recorder import annotation, profile, syscall_names
from cri_shim.seccomp_recorder.recordings import Recordings

X86_64 = syscall_names.AUDIT_ARCH_X86_64
I386 = syscall_names.AUDIT_ARCH_I386


@pytest.mark.parametrize("value", ["of:web.json", "of:a", "of:x_1-2.profile", "of:" + "n" * 255])
def test_good_names(value: str) -> None:
    assert annotation.parse(value, "container 'c'") == value[3:]


@pytest.mark.parametrize("value", [
    "web.json", "of:", "of:../x", "of:..", "of:.", "of:.hidden", "of:/etc/passwd", "of:a/b",
    "of:a\x00b", "of:a b", "of:" + "n" * 256, "OF:x", " of:x", "of:x\n",
])
def test_bad_values_name_the_annotation(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        annotation.parse(value, "container 'web'")
    assert annotation.ANNOTATION in info.value.message and "container 'web'" in info.value.message


def test_container_annotation_wins_over_the_pod() -> None:
    pod = {annotation.ANNOTATION: "of:pod.json"}
    assert annotation.requested({}, pod, "c", "p") == "pod.json"
    assert annotation.requested({annotation.ANNOTATION: "of:mine.json"}, pod, "c", "p") == "mine.json"
    assert annotation.requested({"other": "x"}, {}, "c", "p") is None
    with pytest.raises(InvalidArgument, match="pod 'p'"):
        annotation.requested({}, {annotation.ANNOTATION: "of:../x"}, "c", "p")


def test_output_and_partial_paths(tmp_path: Path) -> None:
    out = annotation.output_path(tmp_path, "web.json")
    assert out == tmp_path / "web.json" and out.is_absolute()
    assert annotation.partial_path(out) == tmp_path / "web.json.partial"


def test_names_by_architecture() -> None:
    assert syscall_names.name(X86_64, 59) == "execve"
    assert syscall_names.name(I386, 11) == "execve"
    assert syscall_names.name(syscall_names.AUDIT_ARCH_AARCH64, 221) == "execve"
    # after python-ptrace's tables: the shared numbers
    assert syscall_names.name(X86_64, 452) == "fchmodat2"
    assert syscall_names.name(I386, 435) == "clone3"
    assert syscall_names.name(X86_64, 5000) is None
    assert syscall_names.name(0x1234, 1) is None
    x32_read = syscall_names.X32_SYSCALL_BIT | 0
    assert syscall_names.scmp_arch(X86_64, x32_read) == "SCMP_ARCH_X32"
    assert syscall_names.name(X86_64, x32_read) == "read"


def test_profile_document() -> None:
    doc, unknown = profile.build({X86_64: {59, 0, 1, 60, 9999}, I386: {11}})
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == 1
    assert doc["architectures"] == ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
    assert doc["syscalls"] == [{"names": ["execve", "exit", "read", "restart_syscall", "rt_sigreturn",
                                          "write"], "action": "SCMP_ACT_ALLOW"}]
    assert unknown == ["arch 0xc000003e call 9999"]
    assert profile.allowed(doc) == doc["syscalls"][0]["names"]


def test_profile_is_a_valid_localhost_profile(tmp_path: Path) -> None:
    from cri_shim.containers.seccomp_profiles import load_localhost

    doc, _ = profile.build({X86_64: {0, 59}}, profile.runtime_tail("runc", False))
    path = tmp_path / "p.json"
    import json

    path.write_text(json.dumps(doc))
    spec = load_localhost(str(path))
    assert spec.default_action == "SCMP_ACT_ERRNO" and spec.default_errno_ret == 1
    assert "setresuid" in (spec.syscalls or [])[0].names


def test_runtime_tail() -> None:
    assert profile.runtime_tail("runc", True) == ()
    assert "capset" in profile.runtime_tail("crun", False)
    assert "setgroups" in profile.runtime_tail("pyrunc", False)
    union = profile.runtime_tail("youki", False)
    assert set(profile.RUNTIME_TAIL["runc"]) <= set(union) and set(profile.RUNTIME_TAIL["crun"]) <= set(union)
    known = syscall_names.all_names(X86_64)
    for names in profile.RUNTIME_TAIL.values():
        assert set(names) <= known, set(names) - known


def test_recordings_requested_and_prepared(tmp_path: Path) -> None:
    import json

    r = Recordings(tmp_path / "rec")
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="web"))
    pod = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p"))
    assert r.requested(cfg, pod) is None
    pod.annotations[annotation.ANNOTATION] = "of:p.json"
    assert r.requested(cfg, pod) == "p.json"
    r.prepare(tmp_path, "p.json", "/usr/sbin/runc", False)
    req = json.loads((tmp_path / "seccomp-recording.json").read_text())
    assert req["output"] == str(tmp_path / "rec" / "p.json")
    assert req["tail"] == list(profile.RUNTIME_TAIL["runc"])


def test_config_key(tmp_path: Path) -> None:
    cfg = config.load(None)
    assert cfg.seccomp_recorder_dir() == Path(cfg.root_dir) / "seccomp-recordings"
    cfg = config.from_dict({"seccomp": {"recorder_dir": "/srv/profiles"}})
    assert cfg.seccomp_recorder_dir() == Path("/srv/profiles")
    assert "[seccomp]\nrecorder_dir = \"/srv/profiles\"" in config.to_toml(cfg)
    with pytest.raises(InvalidArgument, match="seccomp.recorder_dir"):
        config.from_dict({"seccomp": {"recorder_dir": "relative"}}).validate()
    with pytest.raises(InvalidArgument, match="seccomp.'nope'"):
        config.from_dict({"seccomp": {"nope": 1}})
