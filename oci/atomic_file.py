"""The one atomic file writer: after a crash a file holds its old content or its new, never a mix.

The order is what makes it crash-safe: write a temp file beside the target, fsync it, rename it
over the target, then fsync the directory, which is what makes the rename itself durable.

Both layers write through here (cri_shim's metadata files, `Spec.save`, pyrunc's state and
pid files), so it lives at the bottom of the import graph and needs nothing but `os`: pyrunc
imports it at every short-lived command.
"""

import _thread
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived pyrunc command
    StrPath = str | os.PathLike[str]


def fsync_dir(path: "StrPath") -> None:
    """Make the entries of directory path (a rename into it, say) durable."""
    _fsync_path(path, os.O_DIRECTORY)


def _fsync_path(path: "StrPath", flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: "StrPath", path: "StrPath", *, durable: bool = True) -> None:
    """Put the finished temp file tmp in place of path (on the same file system).

    For content that streams into its temp file (a blob download checked against its digest
    before it may be committed); write_atomic does the whole sequence for bytes in memory.
    """
    if durable:
        _fsync_path(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_atomic(path: "StrPath", data: bytes | str, mode: int = 0o644, *,
                 tmp_dir: "StrPath | None" = None, durable: bool = True) -> None:
    """Write data to path with exactly `mode`: temp file, fsync, rename, fsync the directory.

    The temp file is created with `mode` from the start, so a private file is never readable
    by others, not even half-written. tmp_dir (same file system) keeps temp files out of a
    directory whose listing means something, such as a content store's blobs. durable=False
    skips both fsyncs for files whose only readers are live processes and which mean nothing
    after a crash (a pull's progress); readers still never see a torn file.
    """
    path = os.fspath(path)
    directory = os.fspath(tmp_dir) if tmp_dir is not None else os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{_thread.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly mode, whatever the umask
            view = memoryview(data.encode() if isinstance(data, str) else data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")
