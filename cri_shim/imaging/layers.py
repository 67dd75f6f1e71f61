"""Unpacking image layers into directories, safely, in overlayfs form.

Hostile archives are expected. Every member path is resolved component by
component inside the destination without following symlinks: `..` components,
paths through a symlink, and hardlinks to anything that is not a regular file
already inside the layer are refused. Symlinks themselves may point anywhere:
they are stored, never followed here, and resolve inside the container's root.
Whiteouts become overlayfs whiteouts (0:0 character devices) and opaque markers
become the trusted.overlay.opaque xattr. The uncompressed stream's digest is
computed while reading so it can be checked against the image config's diff_id.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from pathlib import Path
from typing import IO

from cri_shim.errors import FailedPrecondition, InvalidArgument

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"


class HashingReader:
    """A file-like wrapper hashing the bytes read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.h.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _decompressed(f: IO[bytes]) -> IO[bytes]:
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f)  # type: ignore[return-value]
    return f


def _clean_parts(name: str, layer: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidArgument(f"layer {layer}: member {name!r} escapes the layer with '..'")
    return parts


def _parent_fd(root: str, parts: list[str], layer: str, name: str) -> int:
    """An fd of the member's parent directory, reached without following any symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for p in parts[:-1]:
            try:
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(p, 0o755, dir_fd=fd)
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                raise InvalidArgument(
                    f"layer {layer}: member {name!r} goes through a symlink or non-directory {p!r}"
                ) from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_existing(dfd: int, leaf: str, keep_dir: bool) -> None:
    try:
        st = os.lstat(leaf, dir_fd=dfd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        import shutil

        shutil.rmtree(f"/proc/self/fd/{dfd}/{leaf}")
        return
    os.unlink(leaf, dir_fd=dfd)


def _apply_meta(dfd: int, leaf: str, m: tarfile.TarInfo, is_link: bool) -> None:
    os.chown(leaf, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
    if not is_link:
        os.chmod(leaf, m.mode & 0o7777, dir_fd=dfd)
        for key, value in (m.pax_headers or {}).items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(f"/proc/self/fd/{dfd}/{leaf}", key[len("SCHILY.xattr."):],
                                value.encode("utf-8", "surrogateescape"))
                except OSError:
                    pass
    os.utime(leaf, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)


def unpack(blob: Path, dest: Path, layer: str) -> tuple[str, int]:
    """Extract a (possibly compressed) layer tar into dest; return (diff_id, unpacked bytes)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = str(dest)
    total = 0
    dirs: list[tuple[list[str], tarfile.TarInfo]] = []
    with open(blob, "rb") as raw:
        reader = HashingReader(_decompressed(raw))
        try:
            tar = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]
            for m in tar:
                parts = _clean_parts(m.name, layer)
                if not parts:
                    continue
                leaf = parts[-1]
                dfd = _parent_fd(root, parts, layer, m.name)
                try:
                    if leaf == OPAQUE:
                        os.setxattr(f"/proc/self/fd/{dfd}", "trusted.overlay.opaque", b"y")
                        continue
                    if leaf.startswith(WHITEOUT_PREFIX):
                        target = leaf[len(WHITEOUT_PREFIX):]
                        _remove_existing(dfd, target, keep_dir=False)
                        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
                        continue
                    _remove_existing(dfd, leaf, keep_dir=m.isdir())
                    if m.isdir():
                        if not os.path.lexists(f"/proc/self/fd/{dfd}/{leaf}"):
                            os.mkdir(leaf, 0o755, dir_fd=dfd)
                        dirs.append((parts, m))
                        continue
                    if m.isreg():
                        src = tar.extractfile(m)
                        assert src is not None
                        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                                     dir_fd=dfd)
                        with os.fdopen(fd, "wb") as out:
                            while chunk := src.read(1 << 20):
                                out.write(chunk)
                        total += m.size
                        _apply_meta(dfd, leaf, m, False)
                    elif m.issym():
                        os.symlink(m.linkname, leaf, dir_fd=dfd)
                        _apply_meta(dfd, leaf, m, True)
                    elif m.islnk():
                        tparts = _clean_parts(m.linkname, layer)
                        if not tparts:
                            raise InvalidArgument(f"layer {layer}: hardlink {m.name!r} has an empty target")
                        tfd = _parent_fd(root, tparts, layer, m.linkname)
                        try:
                            st = os.lstat(tparts[-1], dir_fd=tfd)
                            if not stat.S_ISREG(st.st_mode):
                                raise InvalidArgument(
                                    f"layer {layer}: hardlink {m.name!r} targets {m.linkname!r}, "
                                    "which is not a regular file in the layer")
                            os.link(tparts[-1], leaf, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
                        except FileNotFoundError:
                            raise InvalidArgument(
                                f"layer {layer}: hardlink {m.name!r} targets {m.linkname!r}, "
                                "which is not in the layer") from None
                        finally:
                            os.close(tfd)
                    elif m.ischr() or m.isblk() or m.isfifo():
                        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
                        os.mknod(leaf, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor),
                                 dir_fd=dfd)
                        _apply_meta(dfd, leaf, m, False)
                finally:
                    os.close(dfd)
            reader.drain()
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError, ValueError) as e:
            if isinstance(e, InvalidArgument):
                raise
            raise InvalidArgument(f"layer {layer}: corrupt or truncated archive: {e}") from None
        except Exception as e:
            if type(e).__module__.startswith("zstd"):
                raise InvalidArgument(f"layer {layer}: corrupt zstd stream: {e}") from None
            raise
    # Directory metadata last, so extracting their contents did not disturb mtimes.
    for parts, m in reversed(dirs):
        dfd = _parent_fd(root, parts, layer, m.name)
        try:
            _apply_meta(dfd, parts[-1], m, False)
        finally:
            os.close(dfd)
    return reader.digest, total


def check_diff_id(got: str, want: str, layer: str) -> None:
    if got != want:
        raise FailedPrecondition(f"layer {layer}: uncompressed digest {got} does not match diff_id {want}")
