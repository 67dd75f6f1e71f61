"""Overlay snapshots: committed layers by chain ID, writable container snapshots.

Committed layers live in <root>/snapshots/<n>/fs with a short numeric <n> (the
chain ID -> n map is in the image database), so a mount's lowerdir option stays
well under the page-size limit even for images with many layers (about 100).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from pathlib import Path

from cri_shim.errors import Internal

MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_overlay(lowers: list[Path], upper: Path, work: Path, merged: Path) -> None:
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    lower = ":".join(str(p) for p in lowers)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(opts) >= 4000:
        raise Internal(f"overlay mount options for {merged} are too long ({len(lowers)} layers)")
    if _libc().mount(b"overlay", str(merged).encode(), b"overlay", 0, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise Internal(f"mounting overlay at {merged}: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def unmount(path: Path) -> None:
    libc = _libc()
    while is_mounted(path):
        if libc.umount2(str(path).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise Internal(f"unmounting {path}: {os.strerror(err)}")


def remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
