"""Unpacking image layers into directories, safely, in overlayfs form.

Hostile archives are expected. Every member path is resolved component by
component inside the destination without following symlinks: `..` components,
paths through a symlink, and hardlinks to anything that is not a regular file
already inside the layer are refused. Symlinks themselves may point anywhere:
they are stored, never followed here, and resolve inside the container's root.
Whiteouts become overlayfs whiteouts (0:0 character devices) and opaque markers
become the trusted.overlay.opaque xattr. The uncompressed stream's digest is
computed while reading so it can be checked against the image config's diff_id.

A layer is unpacked in one pass, in one thread: the compressed bytes are hashed
(and, while downloading, written to the blob's ingest file), decompressed (gzip
through zlib-ng, zstd through zstandard: both release the GIL), hashed again and
extracted, with 1 MiB reads. `StreamingUnpack` feeds that pass from the event loop
while the blob downloads, through a bounded queue, so a layer is never in memory
whole. The extracted tree is synced once (syncfs), not file by file, before the
caller commits it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gzip
import hashlib
import os
import queue
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from zlib_ng import gzip_ng, zlib_ng

from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.imaging.tar_headers import next_member

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
READ_SIZE = 256 << 10


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
        while self.read(READ_SIZE):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


class _Prefixed:
    """A reader returning `head` first, then the rest of `raw` (magic sniffing without seek)."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                data, self.head = self.head, b""
                return data + self.raw.read(-1 if n < 0 else n - len(data))
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.raw.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:  # what zlib-ng's GzipFile calls
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _ForwardReader:
    """tarfile's random-access mode over a stream: seek() only ever goes forward, as tarfile
    does when members are read in order. Unlike its stream mode (which re-joins its whole
    buffer on every 512-byte header read) a read copies only what it returns, and file data
    is written straight from the decompressed chunks (`copy_to`)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.buf = b""
        self.i = 0  # read position in buf
        self.pos = 0  # position in the stream

    def _fill(self) -> bool:
        data = self.raw.read(READ_SIZE)
        if not data:
            return False
        self.buf = self.buf[self.i:] + data if self.i < len(self.buf) else data
        self.i = 0
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            while self._fill():
                pass
            n = len(self.buf) - self.i
        while len(self.buf) - self.i < n and self._fill():
            pass
        data = self.buf[self.i:self.i + n]
        self.i += len(data)
        self.pos += len(data)
        return data

    def peek(self, n: int) -> bytes:
        """The next n bytes (fewer at the end), left unread."""
        while len(self.buf) - self.i < n and self._fill():
            pass
        return self.buf[self.i:self.i + n]

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            pos += self.pos
        elif whence != os.SEEK_SET:
            raise OSError("layer stream: seek from the end")
        if pos < self.pos:
            raise OSError(f"layer stream: seek back to {pos} from {self.pos}")
        while self.pos < pos:
            if self.i >= len(self.buf) and not self._fill():
                break  # past the end: the next read finds nothing, as in a file
            step = min(pos - self.pos, len(self.buf) - self.i)
            self.i += step
            self.pos += step
        return self.pos

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next size bytes to fd."""
        while size:
            if self.i >= len(self.buf) and not self._fill():
                raise EOFError("unexpected end of data")
            view = memoryview(self.buf)[self.i:self.i + size]
            n = len(view)
            while view:
                view = view[os.write(fd, view):]
            self.i += n
            self.pos += n
            size -= n


def _decompressed(f: IO[bytes]) -> IO[bytes]:
    magic = f.read(4)
    while 0 < len(magic) < 4:
        more = f.read(4 - len(magic))
        if not more:
            break
        magic += more
    src: IO[bytes] = _Prefixed(magic, f)  # type: ignore[assignment]
    if magic[:2] == b"\x1f\x8b":
        return gzip_ng.GzipFile(fileobj=src)  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        zd = zstandard.ZstdDecompressor()
        return zd.stream_reader(src, read_size=READ_SIZE, read_across_frames=True)  # type: ignore[return-value]
    return src


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def sync_tree(path: Path) -> None:
    """Flush everything written under path to disk: one syncfs for a whole layer, not an
    fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


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


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: every file gets its fchmod


_ROOT = os.geteuid() == 0


def _create_mode(m: tarfile.TarInfo) -> int:
    return m.mode & 0o777


def _apply_meta_fd(fd: int, m: tarfile.TarInfo, umask: int) -> None:
    """_apply_meta for a regular file still open (created with _create_mode): no path lookups,
    and no chown or chmod that would change nothing, two of a small file's six syscalls."""
    if m.uid or m.gid or not _ROOT:  # root's new file is 0:0 (its parents are 0755 until the end)
        os.fchown(fd, m.uid, m.gid)
    mode = m.mode & 0o7777
    if mode != _create_mode(m) & ~umask:  # set-id bits, or masked ones; after chown, which clears set-id
        os.fchmod(fd, mode)
    for key, value in (m.pax_headers or {}).items():
        if key.startswith("SCHILY.xattr."):
            try:
                os.setxattr(fd, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"))
            except OSError:
                pass
    os.utime(fd, (m.mtime, m.mtime))


def unpack(blob: Path, dest: Path, layer: str) -> tuple[str, int]:
    """Extract a (possibly compressed) layer tar into dest; return (diff_id, unpacked bytes)."""
    with open(blob, "rb", buffering=0) as raw:
        return unpack_stream(raw, dest, layer)  # type: ignore[arg-type]


def unpack_stream(raw: IO[bytes], dest: Path, layer: str) -> tuple[str, int]:
    """Extract a (possibly compressed) layer tar read from raw into dest, reading raw to its
    end; return (diff_id, unpacked bytes)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = str(dest)
    total = 0
    dirs: list[tuple[list[str], tarfile.TarInfo]] = []
    umask = _umask()
    try:
        reader = HashingReader(_decompressed(raw))
        fwd = _ForwardReader(reader)  # type: ignore[arg-type]
        tar = tarfile.open(fileobj=fwd, mode="r:")  # type: ignore[call-overload]
        # The parent directory's fd is kept while members stay in the same directory (the
        # usual order). Safe: a member can replace entries inside that directory, never the
        # directory itself; any other parent is opened afresh, without following symlinks.
        cached_parent: list[str] | None = None
        dfd = -1
        try:
            while (m := next_member(tar, fwd)) is not None:
                tar.members.clear()  # nothing looks members up again: 20,000 headers need not stay
                parts = _clean_parts(m.name, layer)
                if not parts:
                    continue
                leaf = parts[-1]
                if parts[:-1] != cached_parent:
                    if dfd >= 0:
                        os.close(dfd)
                        dfd = -1
                    dfd = _parent_fd(root, parts, layer, m.name)
                    cached_parent = parts[:-1]
                if leaf == OPAQUE:
                    os.setxattr(f"/proc/self/fd/{dfd}", "trusted.overlay.opaque", b"y")
                    continue
                if leaf.startswith(WHITEOUT_PREFIX):
                    target = leaf[len(WHITEOUT_PREFIX):]
                    _remove_existing(dfd, target, keep_dir=False)
                    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
                    continue
                if m.isreg():
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    try:
                        fd = os.open(leaf, flags, _create_mode(m), dir_fd=dfd)
                    except FileExistsError:  # an earlier member of the same name: replaced
                        _remove_existing(dfd, leaf, keep_dir=False)
                        fd = os.open(leaf, flags, _create_mode(m), dir_fd=dfd)
                    try:
                        if m.sparse is None:
                            fwd.seek(m.offset_data)
                            fwd.copy_to(fd, m.size)
                        else:
                            src = tar.extractfile(m)
                            assert src is not None
                            while chunk := src.read(READ_SIZE):
                                os.write(fd, chunk)
                        _apply_meta_fd(fd, m, umask)
                    finally:
                        os.close(fd)
                    total += m.size
                    continue
                _remove_existing(dfd, leaf, keep_dir=m.isdir())
                if m.isdir():
                    if not os.path.lexists(f"/proc/self/fd/{dfd}/{leaf}"):
                        os.mkdir(leaf, 0o755, dir_fd=dfd)
                    dirs.append((parts, m))
                    continue
                if m.issym():
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
            if dfd >= 0:
                os.close(dfd)
        reader.drain()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError, ValueError, zlib_ng.error) as e:
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


class Aborted(BaseException):
    """The feeding side gave up (a cancelled pull); not an error of the layer."""


class _QueueReader:
    """The worker thread's side of StreamingUnpack: a file-like read() over queued batches,
    hashing every compressed byte and appending it to the blob's ingest file."""

    def __init__(self, q: queue.SimpleQueue[list[bytes] | None], out: IO[bytes],
                 consumed: Callable[[], None]) -> None:
        self.q, self.out, self.consumed = q, out, consumed
        self.h = hashlib.sha256()
        self.buf = memoryview(b"")
        self.eof = False
        self.aborted = False

    def _next(self) -> bool:
        while not self.buf:
            if self.eof:
                return False
            batch = self.q.get()
            self.consumed()
            if batch is None:
                self.eof = True
                return False
            if not batch:  # the empty batch: abort
                self.aborted = True
                raise Aborted()
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            self.h.update(data)
            self.out.write(data)
            self.buf = memoryview(data)
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while self._next():
                parts.append(bytes(self.buf))
                self.buf = memoryview(b"")
            return b"".join(parts)
        if not self._next():
            return b""
        data, self.buf = self.buf[:n], self.buf[n:]
        return bytes(data)

    def drain(self) -> None:
        while self._next():
            self.buf = memoryview(b"")


class StreamingUnpack:
    """Unpack a layer while its blob downloads: the event loop feeds the compressed bytes,
    one worker thread writes them to the ingest file, hashes them, and decompresses, hashes
    and extracts the stream. At most `max_batches` batches of about 1 MiB wait in between,
    so memory stays bounded whatever the layer's size and the download waits for the disk.

    A hostile or corrupt archive stops the extraction, but the rest of the blob is still
    hashed: a blob that does not match its digest is reported as that (FailedPrecondition)
    rather than as a corrupt archive.
    """

    BATCH = READ_SIZE

    def __init__(self, blob_tmp: Path, dest: Path, layer: str, max_batches: int = 8) -> None:
        self.blob_tmp, self.dest, self.layer = blob_tmp, dest, layer
        self._q: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._space = asyncio.Semaphore(max_batches)
        self._loop = asyncio.get_running_loop()
        self._batch: list[bytes] = []
        self._batched = 0
        self._worker: asyncio.Future[tuple[str, str, int]] | None = None

    def _consumed(self) -> None:
        self._loop.call_soon_threadsafe(self._space.release)

    def _work(self) -> tuple[str, str, int, InvalidArgument | None]:
        with open(self.blob_tmp, "wb") as out:
            reader = _QueueReader(self._q, out, self._consumed)
            error: InvalidArgument | None = None
            diff_id, size = "", 0
            try:
                diff_id, size = unpack_stream(reader, self.dest, self.layer)  # type: ignore[arg-type]
            except InvalidArgument as e:
                error = e
            reader.drain()  # the rest of the blob: trailing bytes, or all of it after an error
            # Not fsynced here: the content store's commit does that before the rename.
        if error is None:
            sync_tree(self.dest)
        return "sha256:" + reader.h.hexdigest(), diff_id, size, error

    def start(self) -> None:
        self._worker = asyncio.ensure_future(asyncio.to_thread(self._work))
        # A worker that stops early must not leave the feeder waiting for space.
        self._worker.add_done_callback(lambda _: self._space.release())

    async def feed(self, chunk: bytes) -> None:
        """Queue a chunk of the blob; waits while the worker is `max_batches` behind."""
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= self.BATCH:
            batch, self._batch, self._batched = self._batch, [], 0
            await self._put(batch)

    async def _put(self, batch: list[bytes] | None) -> None:
        assert self._worker is not None
        if not self._worker.done():
            await self._space.acquire()
        if self._worker.done():
            if self._worker.exception() is not None:
                await self._worker  # an I/O error of the worker: raised here, download stops
            return
        self._q.put(batch)

    async def finish(self) -> tuple[str, str, int, InvalidArgument | None]:
        """End of the blob: (blob digest, diff_id, unpacked bytes, archive error). The caller
        checks the digest before anything else: an archive error of a blob that is not the
        one asked for is reported as the digest mismatch."""
        if self._batch:
            batch, self._batch = self._batch, []
            await self._put(batch)
        self._q.put(None)
        assert self._worker is not None
        return await asyncio.shield(self._worker)

    async def abort(self) -> None:
        """Stop the worker and wait until it has let go of every file (on cancellation)."""
        if self._worker is None:
            return
        self._q.put([])
        for _ in range(2):
            try:
                await asyncio.shield(self._worker)
                return
            except asyncio.CancelledError:
                continue  # cancelled again while waiting: the thread must still be waited for
            except BaseException:
                return


def check_diff_id(got: str, want: str, layer: str) -> None:
    if got != want:
        raise FailedPrecondition(f"layer {layer}: uncompressed digest {got} does not match diff_id {want}")
