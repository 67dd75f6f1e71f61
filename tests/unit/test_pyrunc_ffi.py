"""pyrunc's FFI on _ctypes behaves as the ctypes package for what pyrunc passes through it, and
pyrunc never imports the ctypes package (~4 ms of every create's set-up child): test_pyrunc_jsonio.py
checks that, with the rest of what pyrunc must not import."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from oci.pyrunc import ffi


@pytest.mark.parametrize("name", ["c_int", "c_uint", "c_short", "c_long", "c_ulong", "c_uint64", "c_char",
                                  "c_char_p", "c_void_p", "c_uint32", "c_size_t"])
def test_types_match_ctypes(name: str) -> None:
    ours, theirs = getattr(ffi, name), getattr(ctypes, name)
    assert ffi.sizeof(ours) == ctypes.sizeof(theirs)
    assert ours._type_ == theirs._type_


@pytest.mark.parametrize("args", [(40,), (b"lo",), (b"Apache-2.0",), (b"abcd", 4), (b"ab", 10), (b"",)])
def test_string_buffer_is_create_string_buffer(args: tuple) -> None:
    ours, theirs = ffi.string_buffer(*args), ctypes.create_string_buffer(*args)
    assert bytes(ours) == bytes(theirs) and len(ours) == len(theirs) and ours.value == theirs.value


def test_string_buffer_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError):
        ffi.string_buffer(b"abcdef", 3)


def test_library_calls_and_errno() -> None:
    libc = ffi.Library(None, use_errno=True)
    assert libc.getpid() == os.getpid()
    assert libc.prctl(100000, ffi.c_ulong(0), ffi.c_ulong(0), ffi.c_ulong(0), ffi.c_ulong(0)) == -1
    assert ffi.get_errno() == errno.EINVAL
    buf = ffi.string_buffer(64)
    assert libc.gethostname(buf, ffi.c_size_t(len(buf))) == 0
    assert buf.value.decode() == os.uname().nodename
    with pytest.raises(AttributeError):
        libc.no_such_function_in_libc  # noqa: B018


def test_library_loads_by_name_and_names_what_is_missing() -> None:
    with pytest.raises(OSError, match="libnosuch"):
        ffi.Library("libnosuch.so.9")


def test_structures_and_arrays() -> None:
    class Pair(ffi.Structure):
        _fields_ = [("a", ffi.c_uint), ("b", ffi.c_uint64)]

    arr = (Pair * 2)(Pair(1, 2), Pair(3, 4))
    assert ffi.sizeof(arr) == 32 and arr[1].b == 4
    ids = (ffi.c_uint32 * 4)(7, 8)
    assert list(ids) == [7, 8, 0, 0] and ffi.addressof(ids) != 0
    flags = ffi.c_short.from_buffer(ffi.string_buffer(40), 16)
    flags.value |= 1
    assert flags.value == 1
