"""C calls on `_ctypes`, the C half of ctypes, without the ctypes package.

Importing ctypes costs about 4 ms: its Python half defines every C type and the library
loaders, most of which pyrunc never uses. `_ctypes` alone costs about 1 ms. `create` loads this
in its set-up child, and the container's start waits for that child, so pyrunc keeps to the
few types it passes (all plain `_ctypes` subclasses, exactly as ctypes declares them) and a
library object that looks functions up by name as `ctypes.CDLL` does.
"""

import _ctypes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_RTLD_NOW = 2


def _simple(name: str, code: str) -> "Any":
    """A simple C type as ctypes declares it: a _SimpleCData subclass with its struct code."""
    return type(name, (_ctypes._SimpleCData,), {"_type_": code})


# ctypes' names, so the calls read the same
c_int = _simple("c_int", "i")
c_uint = _simple("c_uint", "I")
c_short = _simple("c_short", "h")
c_long = _simple("c_long", "l")
c_ulong = _simple("c_ulong", "L")
c_char = _simple("c_char", "c")
c_char_p = _simple("c_char_p", "z")
c_void_p = _simple("c_void_p", "P")
# LP64, every architecture pyrunc runs on: the aliases ctypes makes there
c_uint32 = c_uint
c_uint64 = c_ulong
c_size_t = c_ulong
Structure = _ctypes.Structure
sizeof = _ctypes.sizeof
addressof = _ctypes.addressof
get_errno = _ctypes.get_errno


def string_buffer(init: bytes | int, size: int | None = None) -> "Any":
    """ctypes.create_string_buffer: a char array of `size` (or len(init) + 1) bytes."""
    if isinstance(init, int):
        return (c_char * init)()
    buf = (c_char * (size if size is not None else len(init) + 1))()
    buf.value = init
    return buf


class Library:
    """A shared library's functions by attribute, returning int and (with use_errno) keeping
    errno for get_errno, as ctypes.CDLL(name, use_errno=...). name None: the program itself,
    and so libc."""

    def __init__(self, name: str | None, use_errno: bool = False) -> None:
        self._handle = _ctypes.dlopen(name, _RTLD_NOW)

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | (_ctypes.FUNCFLAG_USE_ERRNO if use_errno else 0)
            _restype_ = c_int

        self._function = Function

    def __getattr__(self, name: str) -> "Any":
        if name.startswith("_"):
            raise AttributeError(name)
        func = self._function((name, self))
        setattr(self, name, func)
        return func
