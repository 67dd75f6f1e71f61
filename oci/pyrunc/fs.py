"""The path helpers the short commands need, on `posix` alone.

`os` costs about 2 ms to import (it builds `os.environ` and `os.path` on `_collections_abc`),
a seventh of a whole `pyrunc start`. start, state, kill and delete use only a few of its calls,
which `posix` has directly (`os` re-exports them from it), and these three helpers."""

import posix

_S_IFMT, _S_IFDIR = 0o170000, 0o040000


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


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def isdir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & _S_IFMT == _S_IFDIR
    except (OSError, ValueError):
        return False
