"""The process: user, groups, umask, cwd, env, capabilities, rlimits, no_new_privs, seccomp."""

from __future__ import annotations

import pytest

from oci.builder import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from oci.spec import Seccomp, SeccompSyscall
from tests.conformance.conftest import Harness
from tests.conformance.rootfs import APP_GID, APP_UID, EXTRA_GID

pytestmark = pytest.mark.root


def cap_mask(names: tuple[str, ...] | list[str]) -> int:
    return sum(1 << ALL_CAPABILITIES.index(n) for n in names)


def status_fields(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def test_user_groups_umask(h: Harness) -> None:
    b = h.spec("sh", "-c", "id -u; id -g; grep ^Groups: /proc/self/status; umask; "
                           "touch /tmp/f && stat -c %a /tmp/f; mkdir /tmp/d && stat -c %a /tmp/d")
    b.user(APP_UID, APP_GID, additional_gids=[EXTRA_GID, 3000], umask=0o027)
    result = h.run(b)
    lines = result.stdout.splitlines()
    assert lines[0] == str(APP_UID) and lines[1] == str(APP_GID), result
    assert set(lines[2].split()[1:]) == {str(EXTRA_GID), "3000"}, result
    assert lines[3] == "0027" and lines[4] == "640" and lines[5] == "750", result


def test_root_user_default(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "id -u; id -g; grep ^Groups: /proc/self/status"))
    lines = result.stdout.splitlines()
    assert lines[:2] == ["0", "0"] and lines[2].split()[1:] in ([], ["0"]), result


def test_cwd_and_env(h: Harness) -> None:
    b = h.spec("sh", "-c", "pwd; echo $FOO; echo $WITH_EQUALS").cwd("/home/app")
    result = h.run(b.env({"FOO": "bar baz", "WITH_EQUALS": "a=b"}))
    assert result.stdout.splitlines() == ["/home/app", "bar baz", "a=b"], result


def test_missing_cwd_is_created(h: Harness) -> None:
    result = h.run(h.spec("pwd").cwd("/does/not/exist"))
    assert result.stdout.strip() == "/does/not/exist", result


def test_default_capabilities(h: Harness) -> None:
    result = h.run(h.spec("cat", "/proc/self/status"))
    st = status_fields(result.stdout)
    expected = cap_mask(DEFAULT_CAPABILITIES)
    for field in ("CapBnd", "CapEff", "CapPrm"):
        assert int(st[field], 16) == expected, f"{field}={st[field]} want {expected:016x}"
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0


def test_reduced_capabilities_enforced(h: Harness) -> None:
    b = h.spec("sh", "-c", "grep ^CapEff /proc/self/status; chown 1000 /tmp 2>&1; true")
    result = h.run(b.capabilities(["CAP_KILL"]))
    assert int(status_fields(result.stdout)["CapEff"], 16) == cap_mask(["CAP_KILL"]), result
    assert "Operation not permitted" in result.stdout, result


def test_non_root_user_has_no_effective_caps(h: Harness) -> None:
    result = h.run(h.spec("cat", "/proc/self/status").user(APP_UID, APP_GID))
    st = status_fields(result.stdout)
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
    assert int(st["CapBnd"], 16) == cap_mask(DEFAULT_CAPABILITIES)


def test_ambient_capabilities_for_non_root(h: Harness) -> None:
    b = h.spec("cat", "/proc/self/status").user(APP_UID, APP_GID).no_new_privileges(False)
    b.capabilities(["CAP_NET_BIND_SERVICE"], ambient=True)
    st = status_fields(h.run(b).stdout)
    want = cap_mask(["CAP_NET_BIND_SERVICE"])
    assert (int(st["CapAmb"], 16), int(st["CapEff"], 16)) == (want, want), st


def test_no_new_privileges(h: Harness) -> None:
    on = h.run(h.spec("grep", "^NoNewPrivs", "/proc/self/status"))
    off = h.run(h.spec("grep", "^NoNewPrivs", "/proc/self/status").no_new_privileges(False))
    assert on.stdout.split() == ["NoNewPrivs:", "1"] and off.stdout.split() == ["NoNewPrivs:", "0"]


def test_rlimits(h: Harness) -> None:
    b = h.spec("sh", "-c", "grep -E 'Max (open files|processes|core file size)' /proc/self/limits")
    b.rlimit("RLIMIT_NOFILE", 512, 768).rlimit("nproc", 100, 200).rlimit("RLIMIT_CORE", 0, 0)
    lines = h.run(b).stdout.splitlines()
    limits = {line[:26].strip(): line[26:].split()[:2] for line in lines}  # fixed-width columns
    assert limits["Max open files"] == ["512", "768"], lines
    assert limits["Max processes"] == ["100", "200"], lines
    assert limits["Max core file size"] == ["0", "0"], lines


def test_oom_score_adj(h: Harness) -> None:
    result = h.run(h.spec("cat", "/proc/self/oom_score_adj").oom_score_adj(500))
    assert result.stdout.strip() == "500", result


def test_sysctl(h: Harness) -> None:
    result = h.run(h.spec("cat", "/proc/sys/net/ipv4/ip_forward").sysctl("net.ipv4.ip_forward", "1"))
    assert result.stdout.strip() == "1", result


def _deny_mkdir() -> Seccomp:
    return Seccomp(default_action="SCMP_ACT_ALLOW",
                   architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                   syscalls=[SeccompSyscall(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO",
                                            errno_ret=1)])


def test_seccomp_errno(h: Harness) -> None:
    b = h.spec("sh", "-c", "mkdir /tmp/blocked 2>&1; echo rc=$?; touch /tmp/allowed && echo touched")
    result = h.run(b.seccomp(_deny_mkdir()))
    assert "Operation not permitted" in result.stdout and "rc=1" in result.stdout, result
    assert "touched" in result.stdout, result


def test_seccomp_mode_reported(h: Harness) -> None:
    result = h.run(h.spec("grep", "^Seccomp:", "/proc/self/status").seccomp(_deny_mkdir()))
    assert result.stdout.split() == ["Seccomp:", "2"], result


def test_seccomp_default_errno_with_allow_list(h: Harness) -> None:
    """Default-deny profile: everything busybox needs for `echo` is allowed, getpid is not."""
    allowed = ["execve", "execveat", "brk", "arch_prctl", "set_tid_address", "exit_group", "exit", "write",
               "writev", "read", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "getuid", "geteuid",
               "getgid", "getegid", "getppid", "uname", "ioctl", "fcntl", "close", "mmap", "munmap",
               "mprotect", "stat", "fstat", "newfstatat", "lstat", "statx", "openat", "open", "dup2", "dup3",
               "prctl", "capget", "capset", "setgroups", "setresuid", "setresgid", "setuid", "setgid",
               "getcwd", "chdir", "fchdir", "wait4", "clone", "fork", "vfork", "getpgrp", "setpgid",
               "futex", "sched_getaffinity", "prlimit64", "getrlimit", "rseq", "set_robust_list",
               "pread64", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64",
               "sigaltstack", "nanosleep", "clock_nanosleep", "poll", "ppoll", "select", "pselect6",
               "getrandom", "mremap", "madvise", "tgkill", "kill", "gettid", "sysinfo", "lseek",
               "close_range", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "pipe2", "pipe",
               "getsid", "setsid", "umask", "fstatfs", "statfs", "times", "getrusage", "sched_yield"]
    profile = Seccomp(default_action="SCMP_ACT_ERRNO", default_errno_ret=1,
                      architectures=["SCMP_ARCH_X86_64"],
                      syscalls=[SeccompSyscall(names=allowed, action="SCMP_ACT_ALLOW")])
    result = h.run(h.spec("sh", "-c", "echo alive; mkdir /tmp/x 2>&1; true").seccomp(profile))
    assert "alive" in result.stdout and "Operation not permitted" in result.stdout, result
