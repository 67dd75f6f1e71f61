"""The one atomic file writer: after a crash a file holds its old content or its new, never a mix.

The order is what makes it crash-safe: write a temp file beside the target, fsync it, rename it
over the target, then fsync the directory, which is what makes the rename itself durable.

Both layers write through here (cri_shim's metadata files, `Spec.save`, pyrunc's state and
pid files), so it lives at the bottom of the import graph and needs nothing but `posix`: pyrunc
imports it in `create`, which does not import `os` (oci/pyrunc/fs.py says why).
"""

import _thread
import posix

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived pyrunc command
    from os import PathLike

    StrPath = str | PathLike[str]


def fsync_dir(path: "StrPath") -> None:
    """Make the entries of directory path (a rename into it, say) durable."""
    _fsync_path(path, posix.O_DIRECTORY)


def _fsync_path(path: "StrPath", flags: int = 0) -> None:
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC | flags)
    try:
        posix.fsync(fd)
    finally:
        posix.close(fd)


def commit(tmp: "StrPath", path: "StrPath", *, durable: bool = True) -> None:
    """Put the finished temp file tmp in place of path (on the same file system).

    For content that streams into its temp file (a blob download checked against its digest
    before it may be committed); write_atomic does the whole sequence for bytes in memory.
    """
    if durable:
        _fsync_path(tmp)
    posix.replace(tmp, path)
    if durable:
        fsync_dir(_parent(posix.fspath(path)))


def _parent(path: str) -> str:
    """The directory path's last component is in, spelled so that it resolves as the kernel
    resolves path itself (no lexical "..": a symlink before it would make that a different
    directory)."""
    head, _, _ = path.rstrip("/").rpartition("/")
    return head or ("/" if path.startswith("/") else ".")


def write_atomic(path: "StrPath", data: bytes | str, mode: int = 0o644, *,
                 tmp_dir: "StrPath | None" = None, durable: bool = True) -> None:
    """Write data to path with exactly `mode`: temp file, fsync, rename, fsync the directory.

    The temp file is created with `mode` from the start, so a private file is never readable
    by others, not even half-written. tmp_dir (same file system) keeps temp files out of a
    directory whose listing means something, such as a content store's blobs. durable=False
    skips both fsyncs for files whose only readers are live processes and which mean nothing
    after a crash (a pull's progress); readers still never see a torn file.
    """
    path = posix.fspath(path)
    directory = posix.fspath(tmp_dir) if tmp_dir is not None else _parent(path)
    name = path.rstrip("/").rpartition("/")[2]
    tmp = f"{directory.rstrip('/')}/.{name}.{posix.getpid()}.{_thread.get_ident()}.tmp"
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_NOFOLLOW | posix.O_CLOEXEC
    fd = posix.open(tmp, flags, mode)
    try:
        try:
            posix.fchmod(fd, mode)  # exactly mode, whatever the umask
            view = memoryview(data.encode() if isinstance(data, str) else data)
            while view:
                view = view[posix.write(fd, view):]
            if durable:
                posix.fsync(fd)
        finally:
            posix.close(fd)
        posix.replace(tmp, path)
    except BaseException:
        try:
            posix.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(_parent(path))
