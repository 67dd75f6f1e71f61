"""The one FFI seam for syscalls the os module lacks.

Everything that touches namespaces, mounts or capabilities calls through here, so set-up
logic can be tested without root by swapping these functions out.

libc is loaded on the first call, not at import (through `ffi`, on `_ctypes`, never the ctypes
package): `create` reads only the flags below in the process whose start-up every container
waits for; its set-up child loads libc (`load`) while that parent works.
"""

import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .ffi import Library

_libc: "Library | None" = None


def load() -> "Library":
    """libc, loaded once."""
    global _libc
    if _libc is None:
        from .ffi import Library
        _libc = Library(None, use_errno=True)
    return _libc


# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_CAPSET = 126
_SYS_CAPGET = 125
_SYS_CLOSE_RANGE = 436  # the same number on every architecture (the unified syscall table)
CLOSE_RANGE_CLOEXEC = 4
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}.get(posix.uname().machine, 321)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        from . import ffi
        err = ffi.get_errno()
        raise OSError(err, f"{what}: {posix.strerror(err)}")
    return ret


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    from . import ffi
    libc = load()
    _check(libc.mount(source.encode() if source is not None else None, target.encode(),
                      fstype.encode() if fstype is not None else None, ffi.c_ulong(flags),
                      data.encode() if data else None),
           f"mount {source or ''} on {target} ({fstype or ''}, flags {flags:#x}, data {data or ''!r})")


_SYS_MOUNT_SETATTR = 442  # the unified syscall table: the same number on every architecture
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8


def mount_setattr_recursive(target: str, attr_set: int, attr_clr: int) -> None:
    """mount_setattr(2) with AT_RECURSIVE: the attributes on target and every mount below it
    (what runc's rro, rnosuid... options do; Linux 5.12)."""
    from . import ffi
    libc = load()
    attr = (ffi.c_uint64 * 4)(attr_set, attr_clr, 0, 0)  # struct mount_attr
    _check(libc.syscall(_SYS_MOUNT_SETATTR, ffi.c_int(AT_FDCWD), target.encode(),
                        ffi.c_uint(AT_RECURSIVE), attr, ffi.c_size_t(ffi.sizeof(attr))),
           f"mount_setattr {target} (recursive, set {attr_set:#x}, clear {attr_clr:#x})")


_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429  # the unified syscall table, as mount_setattr
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 0x1, 0o2000000
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_IDMAP = 0x100000
MOVE_MOUNT_F_EMPTY_PATH = 0x4


def open_tree_clone(source: str, recursive: bool) -> int:
    """A detached copy of the mount tree at source ("": the working directory's) (open_tree(2)
    with OPEN_TREE_CLONE)."""
    from . import ffi
    libc = load()
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    flags |= 0 if source else AT_EMPTY_PATH
    ret = libc.syscall(_SYS_OPEN_TREE, ffi.c_int(AT_FDCWD), source.encode(), ffi.c_uint(flags))
    return _check(ret, f"open_tree {source or 'the working directory'}")


def mount_setattr_idmap(tree_fd: int, userns_fd: int, recursive: bool) -> None:
    """Make a detached mount idmapped with the mappings of the user namespace userns_fd."""
    from . import ffi
    libc = load()
    attr = (ffi.c_uint64 * 4)(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(libc.syscall(_SYS_MOUNT_SETATTR, ffi.c_int(tree_fd), b"", ffi.c_uint(flags), attr,
                        ffi.c_size_t(ffi.sizeof(attr))), "mount_setattr (idmap)")


MOVE_MOUNT_T_EMPTY_PATH = 0x40


def move_mount_fd(tree_fd: int, target: str) -> None:
    """Attach a detached mount (an open_tree fd) at target ("" for the working directory)."""
    from . import ffi
    libc = load()
    flags = MOVE_MOUNT_F_EMPTY_PATH | (0 if target else MOVE_MOUNT_T_EMPTY_PATH)
    _check(libc.syscall(_SYS_MOVE_MOUNT, ffi.c_int(tree_fd), b"", ffi.c_int(AT_FDCWD), target.encode(),
                        ffi.c_uint(flags)), f"move_mount to {target or 'the working directory'}")


_SYS_CLONE3 = 435  # the unified syscall table
CLONE_INTO_CGROUP = 0x200000000
# what a kernel without clone3 (ENOSYS, Linux < 5.3), with a smaller struct clone_args (E2BIG)
# or without CLONE_INTO_CGROUP (EINVAL, Linux < 5.7) answers, before it has made anything
CLONE_INTO_CGROUP_UNSUPPORTED = (38, 7, 22)
_SIGCHLD = 17


def clone_into_cgroup(cgroup_fd: int, flags: int = 0) -> int:
    """fork(2) through clone3 with CLONE_INTO_CGROUP (Linux 5.7): the child is born in the cgroup2
    directory open at cgroup_fd, without a migration, and in the new namespaces `flags` asks
    for (CLONE_NEWPID and the like). Returns 0 in the child, its pid in the parent.

    The child runs on without glibc's or CPython's after-fork handlers, so only a single-threaded
    caller may use it (nothing else can hold a lock the child would inherit), and the child must
    end in _exit or execve, as the init does. glibc's cached thread id stays the parent's: only
    raise() reads it (an abort would end in SIGSEGV, not SIGABRT)."""
    from . import ffi
    libc = load()
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    # tls, set_tid, set_tid_size, cgroup
    args = (ffi.c_uint64 * 11)(CLONE_INTO_CGROUP | flags, 0, 0, 0, _SIGCHLD, 0, 0, 0, 0, 0, cgroup_fd)
    return _check(libc.syscall(_SYS_CLONE3, args, ffi.c_size_t(ffi.sizeof(args))),
                  "clone3(CLONE_INTO_CGROUP)")


RLIM_INFINITY = 2**64 - 1


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """setrlimit(2), as prlimit on ourselves: the `resource` module costs about 0.5 ms to load
    in the process that builds the container, which every create waits for, and libc is loaded
    there anyway."""
    from . import ffi
    limits = (ffi.c_uint64 * 2)(soft, hard)  # struct rlimit: rlim_cur, rlim_max
    _check(load().prlimit(0, resource, limits, None), "setrlimit")


def umount2(target: str, flags: int) -> None:
    libc = load()
    _check(libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    libc = load()
    _check(libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def setns(fd: int, nstype: int) -> None:
    libc = load()
    _check(libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    libc = load()
    _check(libc.unshare(flags), f"unshare({flags:#x})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    from . import ffi
    libc = load()
    return _check(libc.prctl(option, ffi.c_ulong(arg2), ffi.c_ulong(arg3),
                             ffi.c_ulong(arg4), ffi.c_ulong(arg5)), f"prctl({option})")


def close_range(first: int, last: int, flags: int) -> None:
    from . import ffi
    libc = load()
    _check(libc.syscall(_SYS_CLOSE_RANGE, ffi.c_uint(first), ffi.c_uint(last), ffi.c_uint(flags)),
           f"close_range({first}, {last}, {flags:#x})")


def loopback_up() -> None:
    """Set `lo` up in the current network namespace (SIOCGIFFLAGS, then SIOCSIFFLAGS with
    IFF_UP), as runc and crun do in a network namespace they create."""
    from . import ffi
    libc = load()
    fd = _check(libc.socket(2, 2 | 0o2000000, 0), "socket(AF_INET, SOCK_DGRAM)")  # SOCK_CLOEXEC
    try:
        ifr = ffi.string_buffer(40)  # struct ifreq: char name[16], then ifr_flags
        ifr[0:2] = b"lo"
        _check(libc.ioctl(fd, ffi.c_ulong(0x8913), ifr), "ioctl SIOCGIFFLAGS lo")
        flags = ffi.c_short.from_buffer(ifr, 16)
        flags.value |= 1  # IFF_UP
        _check(libc.ioctl(fd, ffi.c_ulong(0x8914), ifr), "ioctl SIOCSIFFLAGS lo")
    finally:
        posix.close(fd)


def sethostname(name: str) -> None:
    libc = load()
    b = name.encode()
    _check(libc.sethostname(b, len(b)), "sethostname")


def setdomainname(name: str) -> None:
    libc = load()
    b = name.encode()
    _check(libc.setdomainname(b, len(b)), "setdomainname")


_CAP_V3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    from . import ffi
    libc = load()
    hdr = (ffi.c_uint32 * 2)(_CAP_V3, 0)  # struct __user_cap_header_struct: version, pid
    data = (ffi.c_uint32 * 6)()  # two struct __user_cap_data_struct: effective, permitted, inheritable
    for i in range(2):
        shift = 32 * i
        data[3 * i] = (effective >> shift) & 0xFFFFFFFF
        data[3 * i + 1] = (permitted >> shift) & 0xFFFFFFFF
        data[3 * i + 2] = (inheritable >> shift) & 0xFFFFFFFF
    _check(libc.syscall(_SYS_CAPSET, hdr, data), "capset")


def ioctl_int(fd: int, request: int, arg: int = 0) -> int:
    from . import ffi
    libc = load()
    return _check(libc.ioctl(fd, ffi.c_ulong(request), ffi.c_ulong(arg)), f"ioctl {request:#x}")


def bpf(cmd: int, attr: "Any") -> int:
    """bpf(2) with a union bpf_attr laid out by the caller; returns its (fd or 0) result."""
    from . import ffi
    libc = load()
    return _check(libc.syscall(_SYS_BPF, ffi.c_int(cmd), attr, ffi.c_uint(len(attr))),
                  f"bpf(cmd {cmd})")
