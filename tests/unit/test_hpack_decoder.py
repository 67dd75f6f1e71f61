"""cri-shim's HPACK decoder against an independent encoder (the `hpack` package's), and its refusals."""

from __future__ import annotations

import random

import hpack
import pytest

from cri_shim.server.hpack_decoder import Decoder, HPACKError

NAMES = [":method", ":path", ":authority", "content-type", "grpc-timeout", "user-agent", "te", "x-β"]
NAMES += [f"x-custom-{i}" for i in range(80)]  # enough distinct entries to reach two-byte indexes
VALUES = ["POST", "/runtime.v1.RuntimeService/Version", "application/grpc", "", "é" * 40, "v" * 300]


@pytest.mark.parametrize("huffman", [True, False])
def test_blocks_decode_as_the_reference_decoder_reads_them(huffman: bool) -> None:
    rnd = random.Random(11 if huffman else 12)
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), Decoder(1 << 20)
    for i in range(2000):
        headers: list[tuple[str, str]] = [
            (rnd.choice(NAMES), rnd.choice(VALUES + [f"value-{rnd.randrange(60)}"]))
            for _ in range(rnd.randrange(1, 12))]
        fields = [hpack.NeverIndexedHeaderTuple(*h) if rnd.random() < 0.1 else h for h in headers]
        if rnd.random() < 0.03:  # a dynamic table size update at the start of the next block
            encoder.header_table_size = rnd.choice([0, 64, 2000, 4096])
        block = encoder.encode(fields, huffman=huffman)
        assert list(ours.decode(block)) == [tuple(h) for h in reference.decode(block)], f"block {i}"


def test_a_repeated_block_is_decoded_once_while_the_table_stays_the_same() -> None:
    """A client repeating a call sends the same block of table references; the decoder keeps
    what it decoded to until the dynamic table changes (an entry added or evicted, its size
    changed), after which the same bytes mean other headers."""
    rnd = random.Random(13)
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), Decoder(1 << 20)
    calls = [[(":method", "POST"), (":path", f"/runtime.v1.RuntimeService/M{i}"),
              ("content-type", "application/grpc"), ("te", "trailers")] for i in range(6)]
    hits = 0
    for i in range(3000):
        headers = list(rnd.choice(calls))
        if rnd.random() < 0.05:  # a new entry: the table changes, the kept blocks mean other things
            headers.append((f"x-new-{i}", "v" * rnd.randrange(40)))
        if rnd.random() < 0.02:  # its size: down (evicting) or back up
            encoder.header_table_size = rnd.choice([0, 100, 4096])
        block = encoder.encode(headers, huffman=bool(i % 2))
        hits += block in ours._blocks
        assert list(ours.decode(block)) == [tuple(h) for h in reference.decode(block)], f"block {i}"
    assert hits > 400  # calls repeat blocks between the table's changes (584 with this seed)


def test_a_kept_block_with_a_size_update_is_not_replayed_after_the_size_changed() -> None:
    ours = Decoder(1 << 20)
    shrink = b"\x20\x82"  # size update to 0, then :method GET (static)
    assert list(ours.decode(shrink)) == [(":method", "GET")]
    assert ours.decode(b"\x3f\xe1\x1f") == ()  # size update back to 4096
    ours.decode(b"\x40\x01a\x01b")  # literal with indexing: ("a", "b") at index 62
    assert list(ours.decode(b"\xbe")) == [("a", "b")]
    # the first block again: its size update must empty the table this time
    assert list(ours.decode(shrink)) == [(":method", "GET")]
    with pytest.raises(HPACKError):
        ours.decode(b"\xbe")


@pytest.mark.parametrize(("block", "why"), [
    (b"\x80", "index 0"),
    (b"\xbf", "index 63: an empty dynamic table"),
    (b"\xff\xff\xff\xff\xff\xff", "an integer that never ends"),
    (b"\x3f\xe2\x1f", "a table size of 4,097"),
    (b"\x82\x20", "a table size update after a field"),
    (b"\x40\x05ab", "a name longer than the block"),
    (b"\x00\x81\xff\x00", "a Huffman string of padding that is not all ones"),
])
def test_bad_blocks_are_refused(block: bytes, why: str) -> None:
    with pytest.raises(HPACKError):
        Decoder(1 << 20).decode(block)


def test_header_list_limit() -> None:
    block = hpack.Encoder().encode([("x-big", "v" * 200)], huffman=False)
    assert list(Decoder(1000).decode(block)) == [("x-big", "v" * 200)]
    with pytest.raises(HPACKError, match="header list over 100"):
        Decoder(100).decode(block)
