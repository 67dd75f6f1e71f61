"""What goes into a recorded profile, and the profile document itself (pure).

Which calls count:

- every call any process or thread of the container enters from the moment the tracer has
  attached (the container created, its init blocked on the exec fifo) until its last process
  exits. That includes the runtime's last steps after `start` (opening the fifo, a
  startContainer hook, closing descriptors, a no_new_privs filter load, the execve), because a
  filter loaded before them applies to them too;
- plus, when the container runs without no_new_privs, the runtime's *tail*: the calls its init
  makes after loading the seccomp filter but before `create` returns, so before the tracer can
  attach. Without no_new_privs every runtime loads the filter while it still has
  CAP_SYS_ADMIN, before dropping privileges (runc: `prctl(PR_SET_SECCOMP)` before
  finalizeNamespace; crun: before its capabilities; pyrunc: `process.become`), and then sets
  its groups, ids and capabilities and reports to its parent under that filter. The lists
  below were taken with `strace -f` of `create` on this host (runc 1.1.5, crun 1.8.1, pyrunc)
  for a non-root user with supplementary groups; runc's also has the Go runtime's calls,
  which its locked init thread can make at any moment (a goroutine switch, a stack or heap
  growth, a new thread, setuid's all-threads signal). With no_new_privs the filter goes on
  right before execve, inside what is observed, and no tail is added.

- plus, always, the two calls of the kernel's signal machinery (`SIGNAL_MACHINERY`):
  `restart_syscall`, which the kernel itself issues to resume a sleep interrupted by a stop
  (SIGSTOP/SIGCONT, a debugger) and `rt_sigreturn`, the return from any signal handler.
  Whether a run makes them depends on timing (was the process already asleep when it was
  stopped? did a signal arrive?), not on what the program does, and a profile without them
  turns a stop or a signal into a dead process.

Not counted: the runtime's work before the attach (namespaces, mounts, pivot_root: no filter
is loaded yet), and processes started by `exec` (ExecSync, Exec): the runtime starts those
beside the container's init, not below it. They run under the container's profile too, so a
command a probe or a user execs must be part of the recorded workload, or be run in another
container.

The document: defaultAction SCMP_ACT_ERRNO with defaultErrnoRet 1 (EPERM), the architectures
the calls were made in, and one SCMP_ACT_ALLOW rule naming the calls, sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cri_shim.seccomp_recorder import syscall_names

EPERM = 1

SIGNAL_MACHINERY = ("restart_syscall", "rt_sigreturn")

_GO_RUNTIME = (
    "clone", "epoll_pwait", "exit", "futex", "getpid", "gettid", "madvise", "mmap", "munmap",
    "nanosleep", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sched_yield", "sigaltstack",
    "tgkill", "write",
)

RUNTIME_TAIL: dict[str, tuple[str, ...]] = {
    # libcontainer/standard_init_linux.go: finalizeNamespace (CloseExecFrom, capabilities,
    # setupUser, chdir), pdeath.Restore, getppid, exec.LookPath, closing the sync pipes.
    "runc": (
        "capget", "capset", "chdir", "close", "epoll_ctl", "faccessat", "faccessat2", "fcntl",
        "fstat", "fstatfs", "getcwd", "getdents64", "getppid", "newfstatat", "openat", "prctl",
        "read", "setgid", "setgroups", "setresgid", "setresuid", "setuid",
    ) + _GO_RUNTIME,
    # src/libcrun/linux.c: bounding set, keepcaps, ids, capset, ambient, signal reset, sync.
    "crun": (
        "capset", "close", "prctl", "rt_sigaction", "rt_sigprocmask", "setgroups", "setresgid",
        "setresuid", "write",
    ),
    # oci/pyrunc/process.py become(), lookup(), then init.py's READY and its answer; the
    # interpreter's allocator may map memory at any point.
    "pyrunc": (
        "access", "brk", "capset", "close", "mmap", "munmap", "newfstatat", "prctl", "read",
        "setgroups", "setresgid", "setresuid", "write",
    ),
}


def runtime_tail(runtime: str, no_new_privileges: bool) -> tuple[str, ...]:
    """The calls to add for a container of `runtime` (a binary's base name): none with
    no_new_privs; for a runtime not measured here, the union of all three."""
    if no_new_privileges:
        return ()
    if runtime in RUNTIME_TAIL:
        return RUNTIME_TAIL[runtime]
    return tuple(sorted({n for names in RUNTIME_TAIL.values() for n in names}))


def build(observed: Mapping[int, Iterable[int]],
          tail: Iterable[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """The profile for calls observed as {audit arch: numbers}, plus `tail`; and a note for
    each call that could not be named (an unknown architecture or number), which is left out
    because a runtime-spec profile names calls."""
    names: set[str] = set(tail) | set(SIGNAL_MACHINERY)
    arches: set[str] = set()
    unknown: list[str] = []
    for audit_arch, numbers in observed.items():
        for nr in numbers:
            arch = syscall_names.scmp_arch(audit_arch, nr)
            call = syscall_names.name(audit_arch, nr)
            if arch is None or call is None:
                unknown.append(f"arch 0x{audit_arch:x} call {nr}")
                continue
            arches.add(arch)
            names.add(call)
    if not arches:
        arches.add(syscall_names.native_arch())
    doc: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": sorted(arches),
        "syscalls": [{"names": sorted(names), "action": "SCMP_ACT_ALLOW"}] if names else [],
    }
    return doc, sorted(unknown)


def allowed(doc: Mapping[str, Any]) -> list[str]:
    """The names a profile allows (its SCMP_ACT_ALLOW rules)."""
    out: set[str] = set()
    for rule in doc.get("syscalls") or []:
        if rule.get("action") == "SCMP_ACT_ALLOW":
            out.update(rule.get("names") or [])
    return sorted(out)
