"""The mount syscalls the high-level runtime needs (overlay, tmpfs, detaching unmounts).

One ctypes seam for cri_shim, as oci/pyrunc/syscalls.py is for pyrunc: namespace
pins, the pod's /dev/shm and overlay snapshots all go through here.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from cri_shim.errors import Internal

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: Path, fstype: str, flags: int, options: str, what: str) -> None:
    """mount(2); failures name `what` and the target."""
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise Internal(f"mounting {what} at {target}: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    """True when something is mounted exactly at path (a namespace pin counts)."""
    target = str(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def unmount(path: Path) -> None:
    """Detach every mount stacked at path; a user still inside keeps its view."""
    while is_mounted(path):
        if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise Internal(f"unmounting {path}: {os.strerror(err)}")
