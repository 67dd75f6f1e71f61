"""pyrunc's path helpers, on `posix` alone.

`os` costs about 2 ms to import (it builds `os.environ` and `os.path` on `_collections_abc`),
a seventh of a whole `pyrunc start` and a tenth of what `create` does after its interpreter has
started. pyrunc calls the system through `posix` directly (`os` re-exports those calls from it)
and takes the few `os.path` helpers it needs from here. Each one answers as its `os.path`
namesake does for str paths (tests/unit/test_pyrunc_logic.py compares them), except
`realpath`, which asks the kernel."""

import posix

_S_IFMT, _S_IFDIR, _S_IFREG, _S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000


def join(a: str, *parts: str) -> str:
    """os.path.join for str paths."""
    for b in parts:
        if b.startswith("/") or not a:
            a = b
        elif a.endswith("/"):
            a += b
        else:
            a += "/" + b
    return a


def _mode(path: str, follow: bool = True) -> int:
    """The file type bits of path, 0 when it cannot be reached."""
    try:
        return (posix.stat(path) if follow else posix.lstat(path)).st_mode & _S_IFMT
    except (OSError, ValueError):
        return 0


def exists(path: str) -> bool:
    return _mode(path) != 0


def lexists(path: str) -> bool:
    """True for a dangling symlink too."""
    return _mode(path, follow=False) != 0


def isdir(path: str) -> bool:
    return _mode(path) == _S_IFDIR


def isfile(path: str) -> bool:
    return _mode(path) == _S_IFREG


def islink(path: str) -> bool:
    return _mode(path, follow=False) == _S_IFLNK


def split(path: str) -> tuple[str, str]:
    """(directory, last component); the directory loses its trailing slashes unless it is all
    slashes, as os.path.split does."""
    cut = path.rfind("/") + 1
    head, tail = path[:cut], path[cut:]
    if head.strip("/"):
        head = head.rstrip("/")
    return head, tail


def dirname(path: str) -> str:
    return split(path)[0]


def basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def normpath(path: str) -> str:
    """Collapse "//", "." and "x/.." lexically, as os.path.normpath does ("//" at the very start
    stays: POSIX leaves its meaning to the implementation)."""
    if not path:
        return "."
    lead = 0
    if path.startswith("/"):
        lead = 2 if path.startswith("//") and not path.startswith("///") else 1
    kept: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and kept and kept[-1] != "..":
            kept.pop()
        elif part != ".." or not lead:  # ".." above the root is the root
            kept.append(part)
    return "/" * lead + "/".join(kept) or "."


def abspath(path: str) -> str:
    return normpath(path if path.startswith("/") else join(posix.getcwd(), path))


def realpath(path: str) -> str:
    """The path with every symlink resolved, as the kernel resolves it (it opens the path and
    reads back its name); a path that cannot be opened comes back as abspath(path), so the
    caller's own check reports it."""
    try:
        fd = posix.open(path, posix.O_PATH | posix.O_CLOEXEC)
    except (OSError, ValueError):
        return abspath(path)
    try:
        return posix.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: the path as given, made absolute
        return abspath(path)
    finally:
        posix.close(fd)


def ismount(path: str) -> bool:
    """A mount point: on another device than its parent, or its own parent (the root)."""
    try:
        st = posix.lstat(path)
        if st.st_mode & _S_IFMT == _S_IFLNK:
            return False
        up = posix.lstat(join(path, ".."))
    except (OSError, ValueError):
        return False
    return st.st_dev != up.st_dev or st.st_ino == up.st_ino


def makedirs(path: str, mode: int = 0o777) -> None:
    """mkdir -p: path with mode, its missing parents with the default mode, as
    os.makedirs(path, mode, exist_ok=True) does; an existing non-directory is an error."""
    try:
        posix.mkdir(path, mode)
    except FileNotFoundError:
        parent = dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
        makedirs(parent)
        try:
            posix.mkdir(path, mode)
        except FileExistsError:  # made meanwhile by someone else
            if not isdir(path):
                raise
    except FileExistsError:
        if not isdir(path):
            raise
