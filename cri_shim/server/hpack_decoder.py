"""Decoding HTTP/2 header blocks (HPACK, RFC 7541): the peer's encoder and ours share its table.

`hpack.Decoder` spends about 40 us on an 8-field block of table references here (it logs and
builds objects per field); a CRI call's block is mostly such references, so this decoder walks
the block itself and takes from the `hpack` package only the static table and the Huffman
code. Names and values are decoded as UTF-8 (invalid bytes kept by surrogate escape).
"""

from __future__ import annotations

from collections import deque

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC: tuple[tuple[str, str], ...] = tuple(
    (n.decode(), v.decode()) for n, v in HeaderTable.STATIC_TABLE)
_LAST_STATIC_ONE_BYTE = 0x80 | len(STATIC)
_FIRST_DYNAMIC_ONE_BYTE = _LAST_STATIC_ONE_BYTE + 1
ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1
DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE: we advertise no other
MAX_BLOCKS = 64  # decoded blocks kept (see Decoder.decode)


class HPACKError(Exception):
    """The block cannot be decoded: a connection error (COMPRESSION_ERROR)."""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Decoder:
    def __init__(self, max_header_list: int) -> None:
        self._max_list = max_header_list
        self._max_size = DEFAULT_TABLE_SIZE  # as the peer's encoder last set it
        self._dynamic: deque[tuple[str, str]] = deque()  # newest first
        self._sizes: deque[int] = deque()  # each entry's size, as RFC 7541 counts it
        self._size = 0
        self._changes = 0  # how often the dynamic table changed (an entry added or evicted, its size)
        # Huffman-coded strings seen lately: a client sends the same few again and again
        self._huffman: dict[bytes, tuple[str, int]] = {}
        # Blocks decoded since the dynamic table last changed, and what they decoded to: a
        # client asking the same call again sends the same block of table references, which
        # mean the same headers for as long as the table holds the same entries.
        self._blocks: dict[bytes, tuple[tuple[str, str], ...]] = {}

    def _integer(self, block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        mask = (1 << prefix_bits) - 1
        value = block[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        while True:
            if pos >= len(block):
                raise HPACKError("integer runs past the end of the block")
            b = block[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos
            if shift > 28:
                raise HPACKError("integer too large")

    def _string(self, block: bytes, pos: int) -> tuple[str, int, int]:
        """The string at `pos`, where it ends, and its length in octets once decoded."""
        huffman = block[pos] & 0x80
        length, pos = self._integer(block, pos, 7)
        end = pos + length
        if end > len(block):
            raise HPACKError("string runs past the end of the block")
        raw = block[pos:end]
        if not huffman:
            return _text(raw), end, length
        got = self._huffman.get(raw)
        if got is None:
            try:
                octets = decode_huffman(raw)
            except Exception as e:  # noqa: BLE001 - hpack raises its own types for bad codes
                raise HPACKError(f"bad Huffman string: {e}") from None
            if len(self._huffman) >= 256:
                self._huffman.clear()
            got = self._huffman[raw] = (_text(octets), len(octets))
        return got[0], end, got[1]

    def _entry(self, index: int) -> tuple[str, str]:
        if 0 < index <= len(STATIC):
            return STATIC[index - 1]
        d = index - len(STATIC) - 1
        if 0 <= d < len(self._dynamic):
            return self._dynamic[d]
        raise HPACKError(f"index {index} is in neither table")

    def _changed(self) -> None:
        self._changes += 1
        self._blocks.clear()  # the references they hold now mean other entries

    def _add(self, name: str, value: str, size: int) -> None:
        self._changed()
        self._dynamic.appendleft((name, value))
        self._sizes.appendleft(size)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        if self._size > self._max_size:
            self._changed()
        while self._size > self._max_size and self._dynamic:
            self._dynamic.pop()
            self._size -= self._sizes.pop()

    def decode(self, block: bytes) -> tuple[tuple[str, str], ...]:
        """The block's header list. A block that leaves the dynamic table as it was (its
        fields are table references or literals not indexed) is decoded once while the table
        stays the same."""
        headers = self._blocks.get(block)
        if headers is not None:
            return headers
        changes = self._changes
        headers = tuple(self._decode(block))
        if changes == self._changes:
            if len(self._blocks) >= MAX_BLOCKS:
                self._blocks.clear()
            self._blocks[block] = headers
        return headers

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        total = 0
        pos = 0
        end = len(block)
        while pos < end:
            b = block[pos]
            if b & 0x80:  # indexed
                if 0x80 < b <= _LAST_STATIC_ONE_BYTE:  # most of a block: a one-byte index
                    header = STATIC[b - 0x81]
                    pos += 1
                elif _LAST_STATIC_ONE_BYTE < b < 0xFF and b - _FIRST_DYNAMIC_ONE_BYTE < len(self._dynamic):
                    header = self._dynamic[b - _FIRST_DYNAMIC_ONE_BYTE]
                    pos += 1
                else:
                    index, pos = self._integer(block, pos, 7)
                    header = self._entry(index)
            elif b & 0xE0 == 0x20:  # dynamic table size update
                if headers:
                    raise HPACKError("table size update after the first field")
                size, pos = self._integer(block, pos, 5)
                if size > DEFAULT_TABLE_SIZE:
                    raise HPACKError(f"table size {size} over the {DEFAULT_TABLE_SIZE} we allow")
                if size != self._max_size:
                    self._changed()
                self._max_size = size
                self._evict()
                continue
            else:
                indexing = b & 0xC0 == 0x40
                index, pos = self._integer(block, pos, 6 if indexing else 4)
                if index:
                    name = self._entry(index)[0]
                    name_size = len(name.encode("utf-8", "surrogateescape"))
                else:
                    if pos >= end:
                        raise HPACKError("literal runs past the end of the block")
                    name, pos, name_size = self._string(block, pos)
                if pos >= end:
                    raise HPACKError("literal runs past the end of the block")
                value, pos, value_size = self._string(block, pos)
                header = (name, value)
                if indexing:
                    self._add(name, value, name_size + value_size + ENTRY_OVERHEAD)
            total += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            if total > self._max_list:
                raise HPACKError(f"header list over {self._max_list} bytes")
            headers.append(header)
        return headers
