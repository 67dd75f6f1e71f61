"""Reading a layer's tar headers fast: the plain ones here, every other kind by tarfile.

tarfile parses each 512-byte header field by field in Python (two checksums, a helper call
per field), about half of what a 20,000-small-files layer costs to unpack. Most headers in
real layers are plain ustar or GNU headers of the basic types with octal numbers, which one
pass here reads into the same `TarInfo` tarfile would build. Anything else (pax and GNU
long-name headers, sparse files, global pax headers, base-256 numbers, a bad checksum, the
end-of-archive blocks, a truncated stream) is left to `TarFile.next()` at the same offset, so
its behaviour, errors included, stays tarfile's.
"""

from __future__ import annotations

import struct
import tarfile
from typing import Protocol

BLOCK = tarfile.BLOCKSIZE
# The basic member types tarfile handles in `_proc_builtin` (no extra headers).
_PLAIN_TYPES = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.LNKTYPE,
                          tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE,
                          tarfile.FIFOTYPE))
_DATA_TYPES = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE))  # TarInfo.isreg()
_SPACES = 8 * 0x20  # the checksum field counts as eight spaces


class Peekable(Protocol):
    def peek(self, n: int) -> bytes: ...
    def seek(self, pos: int) -> int: ...


_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s")


def _num(field: bytes) -> int | None:
    """An octal number field, or None when tarfile must judge it (base-256, garbage)."""
    if field[0] in (0o200, 0o377):
        return None
    digits = field.split(b"\0", 1)[0].strip()
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        return None


def parse_plain(buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo | None:
    """The TarInfo tarfile.TarInfo.frombuf would make of a plain header, or None."""
    if len(buf) < BLOCK:
        return None
    (name_f, mode_f, uid_f, gid_f, size_f, mtime_f, sum_f, kind, link_f, _magic, uname_f, gname_f,
     major_f, minor_f, prefix_f) = _HEADER.unpack_from(buf)
    if kind not in _PLAIN_TYPES:
        return None
    chksum = _num(sum_f)
    # tarfile also accepts the signed sum some old tars wrote: those go to it
    if chksum is None or chksum != sum(buf) - sum(sum_f) + _SPACES:
        return None
    nums = (_num(mode_f), _num(uid_f), _num(gid_f), _num(size_f), _num(mtime_f), _num(major_f),
            _num(minor_f))
    if None in nums:
        return None
    name = name_f.split(b"\0", 1)[0].decode(encoding, errors)
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        kind = tarfile.DIRTYPE  # the V7 way of writing a directory
    if kind == tarfile.DIRTYPE:
        name = name.rstrip("/")
    prefix = prefix_f.split(b"\0", 1)[0]
    if prefix:
        name = prefix.decode(encoding, errors) + "/" + name
    m = tarfile.TarInfo(name)
    m.chksum = chksum
    m.mode, m.uid, m.gid, m.size, m.mtime, m.devmajor, m.devminor = nums  # type: ignore[assignment]
    m.type = kind
    m.linkname = link_f.split(b"\0", 1)[0].decode(encoding, errors)
    m.uname = uname_f.split(b"\0", 1)[0].decode(encoding, errors)
    m.gname = gname_f.split(b"\0", 1)[0].decode(encoding, errors)
    return m


def next_member(tar: tarfile.TarFile, stream: Peekable) -> tarfile.TarInfo | None:
    """tar.next(), reading plain headers here. `stream` is the tar's file object; it must
    peek without consuming, so a header left to tarfile is read by tarfile from the start."""
    if tar.firstmember is not None or tar.pax_headers:  # global pax headers patch every member
        return tar.next()
    offset = tar.offset
    if stream.seek(offset) != offset:
        return tar.next()  # the stream ended inside the last member's data: tarfile says so
    m = parse_plain(stream.peek(BLOCK), tar.encoding, tar.errors)
    if m is None:
        return tar.next()
    stream.seek(offset + BLOCK)
    m.offset = offset
    m.offset_data = offset + BLOCK
    tar.offset = m.offset_data
    if m.type in _DATA_TYPES:
        tar.offset += -(-m.size // BLOCK) * BLOCK
    return m
