"""Overlay snapshots: committed layers by chain ID, writable container snapshots.

Committed layers live in <root>/snapshots/<n>/fs with a short numeric <n> (the
chain ID -> n map is in the image database), so a mount's lowerdir option stays
well under the page-size limit even for images with many layers (about 100).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cri_shim import mounts
from cri_shim.errors import Internal

FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_TOPDIR_FL = 0x00020000


def spread_directories(path: Path) -> bool:
    """Mark path as the top of directory hierarchies (chattr +T), so that ext4's Orlov
    allocator puts each directory made in it (a snapshot, a container's layer) in a block
    group of its own choosing instead of its parent's. Without it, a layer unpacked just
    after another was deleted lands in the groups of the inodes freed a moment ago, which
    ext4 will not reuse for a while (recently_deleted): every file create scans past them,
    and a 10,000-file layer took 7 s instead of 1 s here. False where the file system has
    no such flag (it then does no such thing either)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        if buf[0] & FS_TOPDIR_FL:
            return True
        buf[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def mount_overlay(lowers: list[Path], upper: Path, work: Path, merged: Path) -> None:
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    lower = ":".join(str(p) for p in lowers)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(opts) >= 4000:
        raise Internal(f"overlay mount options for {merged} are too long ({len(lowers)} layers)")
    mounts.mount("overlay", merged, "overlay", 0, opts, "overlay")


def mount_overlay_idmapped(lowers: list[Path], upper: Path, work: Path, merged: Path, scratch: Path,
                           userns: Path, root_ids: tuple[int, int]) -> None:
    """The overlay of a container in a user namespace (pinned at `userns`), with no layer chowned.

    Each committed layer is attached, idmapped with the namespace's mappings, under
    scratch/<n>; the overlay is mounted on those; then they are detached again (overlayfs
    holds its own references to its layers). The empty upper directory belongs to the
    container's root (root_ids, its host ids), so what the container writes lands on disk
    under its host ids, as a user namespace means it to.
    """
    for d in (upper, work, merged, scratch):
        d.mkdir(parents=True, exist_ok=True)
    os.chown(upper, *root_ids)
    attached: list[Path] = []
    try:
        for i, lower in enumerate(lowers):
            at = scratch / str(i)
            at.mkdir(exist_ok=True)
            mounts.idmapped_bind(lower, at, userns)
            attached.append(at)
        mount_overlay(attached, upper, work, merged)
    finally:
        release_scratch(scratch)


def release_scratch(scratch: Path) -> None:
    """Detach and remove what mount_overlay_idmapped attached (after a crash too)."""
    if not scratch.is_dir():
        return
    for at in scratch.iterdir():
        mounts.unmount(at)
        with contextlib.suppress(OSError):
            at.rmdir()
    with contextlib.suppress(OSError):
        scratch.rmdir()


def remove_container_rootfs(d: Path, remove: Callable[[Path], None] | None = None) -> None:
    """A container's rootfs directory gone, in one go (one thread hop, not three): the overlay
    (or idmapped bind) unmounted, idmapped layers still attached after a crash detached, then
    the tree removed with `remove` (the daemon's: moved into its trash)."""
    mounts.unmount(d / "merged")
    release_scratch(d / "l")
    (remove or remove_tree)(d)


def commit(tmp: Path, final: Path) -> None:
    """Make an unpacked (and synced) tree the committed snapshot: rename, then fsync the
    directory holding both, so the rename itself survives a crash."""
    os.rename(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def copy_layers(lowers_top_first: list[Path], dest: Path) -> None:
    """The copy-based snapshotter: flatten layers into dest, applying overlay whiteouts.

    Used where overlayfs is unavailable (or configured off); slower and uses more disk,
    but gives the same root file system.
    """
    import stat

    dest.mkdir(parents=True, exist_ok=True)
    for layer in reversed(lowers_top_first):
        for dirpath, dirnames, filenames in os.walk(layer):
            rel = Path(dirpath).relative_to(layer)
            target_dir = dest / rel
            try:
                opaque = os.getxattr(dirpath, "trusted.overlay.opaque") == b"y"
            except OSError:
                opaque = False
            if opaque and rel != Path(".") and target_dir.is_dir():
                shutil.rmtree(target_dir)
            target_dir.mkdir(exist_ok=True)
            shutil.copystat(dirpath, target_dir, follow_symlinks=False)
            for name in list(dirnames) + filenames:
                src = Path(dirpath) / name
                dst = target_dir / name
                st = os.lstat(src)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # whiteout
                    if dst.is_dir() and not dst.is_symlink():
                        shutil.rmtree(dst)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            dst.unlink()
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
                        dst.unlink()
                    continue  # os.walk descends into it next
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst)
                elif dst.exists() or dst.is_symlink():
                    dst.unlink()
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(src, dst, follow_symlinks=False)
                else:
                    os.mknod(dst, st.st_mode, st.st_rdev)
                os.lchown(dst, st.st_uid, st.st_gid)
