"""The host-mount seam of the high-level runtime: overlay, tmpfs, detaching unmounts.

Namespace pins, the pod's /dev/shm and overlay snapshots all go through here, as everything
in pyrunc goes through oci/pyrunc/syscalls.py (youki's syscall trait). The syscalls sit behind
one object, `host`: a unit test swaps it for a fake (`monkeypatch.setattr(mounts, "host", fake)`)
and drives the managers' mount logic without root.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from cri_shim.errors import Internal

# mount(2) flags (linux/mount.h)
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
# umount2(2) flags
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
MAX_STACKED = 64  # mounts stacked at one path that unmount() takes off

MOUNTINFO = "/proc/self/mountinfo"

# the new mount API (linux/mount.h; the unified syscall table: the same numbers everywhere)
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 0x1, 0o2000000
MOUNT_ATTR_IDMAP = 0x100000
MOVE_MOUNT_F_EMPTY_PATH = 0x4


class HostMounts:
    """The real syscalls, through libc (loaded on first use). Failures raise OSError."""

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None

    def _lib(self) -> ctypes.CDLL:
        if self._libc is None:
            self._libc = ctypes.CDLL(None, use_errno=True)
        return self._libc

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        if self._lib().mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags),
                             data.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def umount2(self, target: str, flags: int) -> None:
        if self._lib().umount2(target.encode(), flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def mountinfo(self) -> str:
        with open(MOUNTINFO) as f:
            return f.read()

    def _syscall(self, what: str, number: int, *args: object) -> int:
        ret = self._lib().syscall(number, *args)
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return int(ret)

    def idmapped_clone(self, source: str, userns_fd: int) -> int:
        """A detached copy of the mount at source (open_tree) that shows its files through the
        mappings of the user namespace userns_fd (mount_setattr MOUNT_ATTR_IDMAP)."""
        fd = self._syscall(f"open_tree {source}", _SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), source.encode(),
                           ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)  # struct mount_attr
        try:
            self._syscall(f"idmapping {source}", _SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"",
                          ctypes.c_uint(AT_EMPTY_PATH), attr, ctypes.c_size_t(ctypes.sizeof(attr)))
        except OSError:
            os.close(fd)
            raise
        return fd

    def attach(self, tree_fd: int, target: str) -> None:
        """move_mount a detached mount (an open_tree fd) onto target."""
        self._syscall(f"move_mount to {target}", _SYS_MOVE_MOUNT, ctypes.c_int(tree_fd), b"",
                      ctypes.c_int(AT_FDCWD), target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))


host = HostMounts()


def mount(source: str, target: Path, fstype: str, flags: int, options: str, what: str) -> None:
    """mount(2); failures name `what` and the target."""
    try:
        host.mount(source, str(target), fstype, flags, options)
    except OSError as e:
        raise Internal(f"mounting {what} at {target}: {e.strerror}") from None


def is_mounted(path: Path) -> bool:
    """True when something is mounted exactly at path (a namespace pin counts)."""
    target = str(path)
    try:
        text = host.mountinfo()
    except OSError:
        return False
    return any(len(f := line.split()) > 4 and f[4] == target for line in text.splitlines())


def unmount(path: Path) -> None:
    """Detach every mount stacked at path (a symlink there is not followed); a user still
    inside keeps its view. umount2 itself says when nothing is left: EINVAL (not a mount
    point), or ENOENT/ENOTDIR (no such path). Asking /proc/self/mountinfo first cost a
    read and parse of the whole table per call (~0.3 ms of each RemoveContainer here)."""
    for _ in range(MAX_STACKED):
        try:
            host.umount2(str(path), MNT_DETACH | UMOUNT_NOFOLLOW)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                return
            raise Internal(f"unmounting {path}: {e.strerror}") from None
    raise Internal(f"unmounting {path}: still mounted after {MAX_STACKED} unmounts")


def idmapped_bind(source: Path, target: Path, userns: Path) -> None:
    """Bind source at target, idmapped with the mappings of the user namespace pinned at
    `userns`: files owned by id N on disk appear owned by N inside that namespace."""
    try:
        ns_fd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise Internal(f"opening user namespace {userns}: {e.strerror}") from None
    try:
        tree = host.idmapped_clone(str(source), ns_fd)
    except OSError as e:
        hint = " (its file system does not support idmapped mounts)" if e.errno == 22 else ""
        raise Internal(f"idmapped mount of {source}: {e.strerror}{hint}") from None
    finally:
        os.close(ns_fd)
    try:
        host.attach(tree, str(target))
    except OSError as e:
        raise Internal(f"idmapped mount of {source} at {target}: {e.strerror}") from None
    finally:
        os.close(tree)


def can_idmap(path: str, userns: Path) -> bool:
    """Whether the file system holding path takes idmapped mounts (overlayfs and procfs, for
    instance, do not): the same probe critest makes, a throw-away idmapped copy."""
    try:
        ns_fd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(host.idmapped_clone(path, ns_fd))
        return True
    except OSError:
        return False
    finally:
        os.close(ns_fd)
