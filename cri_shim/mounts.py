"""The host-mount seam of the high-level runtime: overlay, tmpfs, detaching unmounts.

Namespace pins, the pod's /dev/shm and overlay snapshots all go through here, as everything
in pyrunc goes through oci/pyrunc/syscalls.py (youki's syscall trait). The syscalls sit behind
one object, `host`: a unit test swaps it for a fake (`monkeypatch.setattr(mounts, "host", fake)`)
and drives the managers' mount logic without root.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from cri_shim.errors import Internal

# mount(2) flags (linux/mount.h)
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
# umount2(2) flags
MNT_DETACH = 0x2

MOUNTINFO = "/proc/self/mountinfo"


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
    """Detach every mount stacked at path; a user still inside keeps its view."""
    while is_mounted(path):
        try:
            host.umount2(str(path), MNT_DETACH)
        except OSError as e:
            raise Internal(f"unmounting {path}: {e.strerror}") from None
