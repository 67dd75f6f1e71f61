"""Field-level building blocks: the error that names a field, and checks on plain strings.

Checks raise FieldError(path, problem); the request-level functions in this package add
the object ("pod sandbox 'web' in namespace 'default'") and turn it into InvalidArgument.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping

from cri_shim.errors import InvalidArgument

# Values are quoted in messages; a hostile request may send megabytes in one field.
SHOWN_CHARS = 80


class FieldError(InvalidArgument):
    """One bad field: `path` names it the way the request spells it, e.g. config.hostname."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def show(value: object) -> str:
    """repr() of a value, shortened: NUL and newlines show escaped, huge values do not flood logs."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return text[: SHOWN_CHARS - 3] + "..."


def item(path: str, key: object) -> str:
    """Path of a map entry or list element: sysctls['a.b'], cmd[0]."""
    return f"{path}[{key!r}]" if isinstance(key, str) else f"{path}[{key}]"


def no_nul(path: str, value: str | bytes) -> None:
    # Every such string ends up in a C string (file name, argv, environment, cgroup path):
    # the kernel would cut it at the NUL, and Python refuses it with a ValueError.
    if ("\0" if isinstance(value, str) else b"\0") in value:
        raise FieldError(path, f"{show(value)} contains a NUL byte")


def no_nul_all(path: str, values: Iterable[str]) -> None:
    for i, v in enumerate(values):
        no_nul(item(path, i), v)


def no_nul_keys(path: str, values: Mapping[str, str]) -> None:
    for k in values:
        no_nul(item(path, k), k)


def single_line(path: str, value: str) -> None:
    """No NUL and no line break: for values written as one line of a file (resolv.conf, /proc/sys)."""
    no_nul(path, value)
    if "\n" in value or "\r" in value:
        raise FieldError(path, f"{show(value)} contains a line break")


def absolute_path(path: str, value: str, *, required: bool = True) -> None:
    """An absolute path without NUL; empty only when not required."""
    no_nul(path, value)
    if not value:
        if required:
            raise FieldError(path, "must be an absolute path, got an empty string")
        return
    if not value.startswith("/"):
        raise FieldError(path, f"{show(value)} must be an absolute path")


def no_dot_dot(path: str, value: str) -> None:
    if ".." in value.split("/"):
        raise FieldError(path, f"{show(value)} must not contain '..' components")


def stays_inside(path: str, value: str) -> str:
    """A relative path that, normalised, names something strictly below its base directory."""
    no_nul(path, value)
    if value.startswith("/"):
        raise FieldError(path, f"{show(value)} must be relative to its directory, not absolute")
    norm = posixpath.normpath(value)
    if norm == "." or norm == ".." or norm.startswith("../"):
        raise FieldError(path, f"{show(value)} leaves its directory")
    return norm


def int_range(path: str, value: int, low: int, high: int, *, also: tuple[int, ...] = ()) -> None:
    """low <= value <= high, or one of the special values in `also` (0 = unset, -1 = unlimited)."""
    if value in also or low <= value <= high:
        return
    allowed = ", ".join(str(a) for a in also)
    span = f"{low}..{high}"
    raise FieldError(path, f"{value} is outside {allowed + ' or ' if allowed else ''}{span}")
