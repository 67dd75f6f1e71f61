"""The sans-IO SPDY/3.1 core: frames against bytes written by hand from the specification's
layouts, header compression, and two Connections talking to each other in memory."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

import pytest

from cri_shim.streaming import spdy
from cri_shim.streaming.spdy import (
    Connection,
    ConnectionClosed,
    Data,
    DataFrame,
    FrameError,
    FrameReader,
    FrameWriter,
    GoAway,
    GoAwayFrame,
    HeadersFrame,
    HeadersReceived,
    LocalProtocolError,
    Ping,
    PingFrame,
    ProtocolError,
    RstStatus,
    RstStreamFrame,
    Setting,
    Settings,
    SettingsFrame,
    StreamOpened,
    StreamReply,
    StreamReset,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdate,
    WindowUpdateFrame,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# The SPDY/3 dictionary's adler32, the DICTID of a zlib stream that uses it (RFC 1950).
DICTID = h("e3c6a7c2")
# {"streamtype": "error"} as a SPDY/3 name/value block: count, then length-prefixed name and value.
BLOCK_ERROR = h("00000001 0000000a 73747265616d74797065 00000005 6572726f72")
# {"streamtype": "stdin"}
BLOCK_STDIN = h("00000001 0000000a 73747265616d74797065 00000005 737464696e")


def stored(raw: bytes) -> bytes:
    """A deflate stored block (BFINAL=0, BTYPE=00) holding raw, as a sync flush leaves it."""
    return b"\x00" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw


# A zlib stream header that announces a preset dictionary: CMF 0x78, FLG 0xbb (FDICT set).
ZLIB_HEAD = h("78bb") + DICTID


def syn_stream_bytes(stream_id: int, block: bytes, flags: int = 0) -> bytes:
    return (
        h("8003 0001")
        + bytes([flags])
        + (10 + len(block)).to_bytes(3, "big")
        + stream_id.to_bytes(4, "big")
        + h("00000000 00 00")  # associated stream id, priority, slot
        + block
    )


def frames_of(data: bytes) -> list[spdy.Frame]:
    reader = FrameReader()
    reader.feed(data)
    out = []
    while (f := reader.next_frame()) is not None:
        out.append(f)
    assert reader.buffered == 0
    return out


# ------------------------------------------------------------------------------- dictionary


def test_dictionary_is_the_spdy3_one() -> None:
    d = spdy.DICTIONARY
    assert len(d) == 1423
    assert d.startswith(h("00000007") + b"options" + h("00000004") + b"head")
    assert h("00000006") + b"200 OK" in d
    assert d.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    assert struct.pack(">I", zlib.adler32(d)) == DICTID
    # The bytes of golang.org/x/net/spdy's headerDictionary (as in moby/spdystream).
    assert hashlib.sha256(d).hexdigest() == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


# ---------------------------------------------------------------------------- frames: parsing


@pytest.mark.parametrize(
    ("wire", "frame"),
    [
        (h("8003 0006 00 000004 00000001"), PingFrame(1)),
        (h("8003 0003 00 000008 00000001 00000005"), RstStreamFrame(1, RstStatus.CANCEL)),
        (h("8003 0007 00 000008 00000003 00000000"), GoAwayFrame(3, 0)),
        (h("8003 0007 00 000008 00000003 00000002"), GoAwayFrame(3, 2)),
        (h("8003 0009 00 000008 00000005 00008000"), WindowUpdateFrame(5, 0x8000)),
        (h("8003 0009 00 000008 00000000 00010000"), WindowUpdateFrame(0, 0x10000)),
        (
            h("8003 0004 00 00000c 00000001 00000007 00020000"),
            SettingsFrame((Setting(spdy.SettingId.INITIAL_WINDOW_SIZE, 0x20000),)),
        ),
        (
            h("8003 0004 01 000014 00000002 01000004 00000064 00000007 00001000"),
            SettingsFrame((Setting(4, 100, flags=1), Setting(7, 4096)), clear=True),
        ),
        (h("00000003 01 000005 68656c6c6f"), DataFrame(3, b"hello", fin=True)),
        (h("00000002 00 000003 616263"), DataFrame(2, b"abc")),
        (h("00000001 01 000000"), DataFrame(1, b"", fin=True)),
    ],
)
def test_fixed_frames_parse_and_serialize(wire: bytes, frame: spdy.Frame) -> None:
    assert frames_of(wire) == [frame]
    assert FrameWriter().serialize(frame) == wire


def test_syn_stream_with_hand_built_header_block() -> None:
    # Two SYN_STREAMs in one compression context: only the first carries the zlib header.
    first = syn_stream_bytes(1, ZLIB_HEAD + stored(BLOCK_ERROR))
    second = syn_stream_bytes(3, stored(BLOCK_STDIN), flags=spdy.FLAG_FIN)
    assert first[:8] == h("8003 0001 00 000030")
    assert frames_of(first + second) == [
        SynStreamFrame(1, {"streamtype": "error"}),
        SynStreamFrame(3, {"streamtype": "stdin"}, fin=True),
    ]


def test_syn_reply_and_headers_with_hand_built_blocks() -> None:
    reply = h("8003 0002 01 00002a 00000001") + ZLIB_HEAD + stored(BLOCK_ERROR)  # 4 + 6 + 5 + 27
    headers = h("8003 0008 00 000024 00000001") + stored(BLOCK_STDIN)  # 4 + 5 + 27
    assert frames_of(reply + headers) == [
        SynReplyFrame(1, {"streamtype": "error"}, fin=True),
        HeadersFrame(1, {"streamtype": "stdin"}),
    ]


def test_syn_stream_priority_slot_associated_and_unidirectional() -> None:
    block = ZLIB_HEAD + stored(h("00000000"))
    wire = h("8003 0001 02") + (10 + len(block)).to_bytes(3, "big") + h("00000002 00000001 a0 07") + block
    assert frames_of(wire) == [
        SynStreamFrame(2, {}, unidirectional=True, associated_stream_id=1, priority=5, slot=7)
    ]


def test_multi_valued_header_keeps_nul_separator() -> None:
    raw = h("00000001 00000001 61 00000003 780079")  # a: "x\0y"
    assert frames_of(syn_stream_bytes(1, ZLIB_HEAD + stored(raw))) == [SynStreamFrame(1, {"a": "x\x00y"})]


# ------------------------------------------------------------------------ frames: serializing


def test_serialized_syn_stream_layout_and_block() -> None:
    writer = FrameWriter()
    wire = writer.serialize(SynStreamFrame(1, {"streamtype": "error"}, fin=True, priority=3))
    assert wire[:4] == h("8003 0001")
    assert wire[4] == 0x01 and int.from_bytes(wire[5:8], "big") == len(wire) - 8
    assert wire[8:18] == h("00000001 00000000 60 00")
    block = wire[18:]
    assert block[:2] == h("78") + block[1:2] and block[1] & 0x20  # FDICT
    assert block[2:6] == DICTID
    assert block.endswith(h("0000ffff"))  # Z_SYNC_FLUSH
    inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
    assert inflate.decompress(block) == BLOCK_ERROR
    # The context persists: the next block continues the same zlib stream, without a header.
    wire2 = writer.serialize(SynReplyFrame(3, {"streamtype": "stdin"}))
    assert wire2[:8] == h("8003 0002 00") + (len(wire2) - 8).to_bytes(3, "big")
    assert wire2[8:12] == h("00000003")
    assert inflate.decompress(wire2[12:]) == BLOCK_STDIN


def test_header_names_are_lowercased_on_the_wire() -> None:
    wire = FrameWriter().serialize(HeadersFrame(1, {"StreamType": "data"}))
    assert frames_of(wire) == [HeadersFrame(1, {"streamtype": "data"})]


def test_header_block_round_trip_many_frames() -> None:
    writer, reader = FrameWriter(), FrameReader()
    sent = [
        SynStreamFrame(2 * i + 1, {"streamtype": t, "port": str(8000 + i), "requestid": str(i)})
        for i, t in enumerate(["data", "error"] * 20)
    ]
    for frame in sent:
        reader.feed(writer.serialize(frame))
    got = []
    while (f := reader.next_frame()) is not None:
        got.append(f)
    assert got == sent


def test_split_and_merged_input() -> None:
    writer = FrameWriter()
    frames: list[spdy.Frame] = [
        SynStreamFrame(1, {"streamtype": "stdin"}),
        DataFrame(1, b"x" * 1000),
        PingFrame(7),
        SynReplyFrame(1, {}),
        DataFrame(1, b"", fin=True),
        WindowUpdateFrame(0, 1234),
    ]
    wire = b"".join(writer.serialize(f) for f in frames)
    reader = FrameReader()
    got = []
    for i in range(len(wire)):  # one byte at a time
        reader.feed(wire[i : i + 1])
        while (f := reader.next_frame()) is not None:
            got.append(f)
    assert got == frames
    assert frames_of(wire) == frames  # all at once


def test_unknown_control_frame_is_skipped() -> None:
    wire = h("8003 00ff 00 000003 010203") + h("8003 0006 00 000004 00000009")
    assert frames_of(wire) == [PingFrame(9)]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (h("8002 0006 00 000004 00000001"), "version 2"),
        (h("8003 0006 00 000005 0000000100"), "PING frame has 5 bytes"),
        (h("8003 0003 00 000004 00000001"), "RST_STREAM frame has 4 bytes"),
        (h("8003 0003 00 000008 00000001 00000000"), "status 0"),
        (h("8003 0009 00 000008 00000000"), None),  # incomplete: no error, waits
        (h("00000000 00 000001 61"), "DATA frame on stream 0"),
        (h("8003 0004 00 000008 00000002 00000007"), "SETTINGS frame of 8 bytes for 2 entries"),
        (syn_stream_bytes(0, ZLIB_HEAD + stored(BLOCK_ERROR)), "SYN_STREAM frame on stream 0"),
        (syn_stream_bytes(1, b"not zlib at all"), "does not decompress"),
        (
            syn_stream_bytes(1, ZLIB_HEAD + stored(h("00000001 00000064 616263646566"))),
            "ends inside a header name",
        ),
        (syn_stream_bytes(1, ZLIB_HEAD + stored(h("00000005 00000001 61"))), "claims 5 headers"),
        (syn_stream_bytes(1, ZLIB_HEAD + stored(BLOCK_ERROR + b"zz")), "2 bytes after the header block"),
        (h("8003 0001 00 000004 00000001"), "SYN_STREAM frame has 4 bytes"),
        (h("8003 0006 00 ffffff"), "too large"),  # refused before the payload arrives
    ],
)
def test_malformed_frames(wire: bytes, message: str | None) -> None:
    reader = FrameReader()
    reader.feed(wire)
    if message is None:
        assert reader.next_frame() is None
        return
    with pytest.raises(FrameError, match=message) as exc:
        reader.next_frame()
    assert exc.value.stream_id is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (h("00000001 00000001 41 00000001 78"), "not lower case"),
        (h("00000002 00000001 61 00000001 78 00000001 61 00000001 79"), "duplicate header"),
        (h("00000001 00000000 00000001 78"), "empty header name"),
    ],
)
def test_header_problems_are_stream_errors(raw: bytes, message: str) -> None:
    reader = FrameReader()
    reader.feed(syn_stream_bytes(5, ZLIB_HEAD + stored(raw)) + syn_stream_bytes(7, stored(BLOCK_STDIN)))
    with pytest.raises(FrameError, match=message) as exc:
        reader.next_frame()
    assert exc.value.stream_id == 5
    # The compression context is intact: the next frame parses.
    assert reader.next_frame() == SynStreamFrame(7, {"streamtype": "stdin"})


# ----------------------------------------------------------------------------- connections


def pump(a: Connection, b: Connection, chunk: int = 0) -> tuple[list[spdy.Event], list[spdy.Event]]:
    """Exchange bytes until neither side has any; returns the events each side saw."""
    ev_a: list[spdy.Event] = []
    ev_b: list[spdy.Event] = []
    for _ in range(100_000):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return ev_a, ev_b
        for out, peer, evs in ((out_a, b, ev_b), (out_b, a, ev_a)):
            step = chunk or len(out) or 1
            for i in range(0, len(out), step):
                evs += peer.receive_data(out[i : i + step])
    raise AssertionError("the connections never went quiet")


def data_of(events: list[spdy.Event], stream_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data) and e.stream_id == stream_id)


def test_streams_open_reply_and_data_both_ways() -> None:
    client, server = Connection(client=True), Connection()
    err = client.open_stream({"streamtype": "error"})
    stdin = client.open_stream({"streamtype": "stdin"})
    stdout = client.open_stream({"streamtype": "stdout"})
    assert (err, stdin, stdout) == (1, 3, 5)
    _, ev = pump(client, server)
    assert ev == [
        StreamOpened(1, {"streamtype": "error"}),
        StreamOpened(3, {"streamtype": "stdin"}),
        StreamOpened(5, {"streamtype": "stdout"}),
    ]
    with pytest.raises(LocalProtocolError, match="reply before"):
        server.send_data(5, b"early")
    for sid in (1, 3, 5):
        server.reply(sid, {})
    ev, _ = pump(client, server)
    assert ev == [StreamReply(1, {}), StreamReply(3, {}), StreamReply(5, {})]

    client.send_data(stdin, b"echo hi\n", fin=True)
    server.send_data(stdout, b"hi\n")
    server.close_stream(stdout)
    ev_c, ev_s = pump(client, server)
    assert ev_s == [Data(3, b"echo hi\n", fin=True)]
    assert ev_c == [Data(5, b"hi\n"), Data(5, b"", fin=True)]
    with pytest.raises(LocalProtocolError):
        client.send_data(stdin, b"more")
    # stdin: the client sent FIN, the server too once it closes its side: then both forget it.
    assert 3 in server.open_streams
    server.close_stream(3)
    client.close_stream(5)
    pump(client, server)
    assert server.open_streams == client.open_streams == [1]


def test_server_opens_even_streams_and_fin_on_syn() -> None:
    client, server = Connection(client=True), Connection()
    assert server.open_stream({"x": "y"}, fin=True) == 2
    ev_c, _ = pump(client, server)
    assert ev_c == [StreamOpened(2, {"x": "y"}, fin=True)]
    client.reply(2, {}, fin=True)
    _, ev_s = pump(client, server)
    assert ev_s == [StreamReply(2, {}, fin=True)]
    assert client.open_streams == server.open_streams == []


def test_reset_drops_the_stream_and_pending_data() -> None:
    client, server = Connection(client=True, flow_control=True), Connection(flow_control=True)
    sid = client.open_stream({"streamtype": "data"})
    pump(client, server)
    server.reply(sid, {})
    server.send_data(sid, b"z" * 200_000)
    assert server.pending_bytes(sid) == 200_000 - 65536
    server.reset(sid, RstStatus.INTERNAL_ERROR)
    assert server.pending_bytes() == 0
    ev_c, _ = pump(client, server)
    assert isinstance(ev_c[-1], StreamReset) and ev_c[-1] == StreamReset(sid, RstStatus.INTERNAL_ERROR)
    assert client.open_streams == server.open_streams == []
    # Frames for the reset stream still in flight are ignored, not answered with RST.
    assert server.receive_data(FrameWriter().serialize(DataFrame(sid, b"late"))) == []


def test_ping_is_answered_automatically() -> None:
    client, server = Connection(client=True), Connection()
    pid = client.ping()
    assert pid == 1
    assert client.data_to_send() == h("8003 0006 00 000004 00000001")
    events = server.receive_data(h("8003 0006 00 000004 00000001"))
    assert events == [Ping(1, reply=False)]
    assert server.data_to_send() == h("8003 0006 00 000004 00000001")
    assert client.receive_data(h("8003 0006 00 000004 00000001")) == [Ping(1, reply=True)]
    assert server.ping() == 2 and client.ping() == 3
    ev_c, ev_s = pump(client, server)
    assert ev_c == [Ping(2, reply=False), Ping(3, reply=True)]
    assert ev_s == [Ping(3, reply=False), Ping(2, reply=True)]


def test_goaway() -> None:
    client, server = Connection(client=True), Connection()
    client.open_stream({})
    pump(client, server)
    server.goaway()
    assert server.data_to_send() == h("8003 0007 00 000008 00000001 00000000")
    client.receive_data(h("8003 0007 00 000008 00000001 00000000"))
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        client.open_stream({})
    other = Connection(client=True)
    assert other.receive_data(h("8003 0007 00 000008 00000000 00000002")) == [GoAway(0, 2)]


def test_goaway_then_new_stream_is_ignored() -> None:
    client, server = Connection(client=True), Connection()
    client.open_stream({})
    pump(client, server)
    server.goaway()
    client.open_stream({})  # crosses the GOAWAY on the wire
    ev_c, ev_s = pump(client, server)
    assert ev_c == [GoAway(1, 0)]
    assert ev_s == []
    assert server.open_streams == [1]
    # The ignored SYN_STREAM's header block was still inflated: the next block decodes.
    client.send_headers(1, {"after": "goaway"})
    _, ev_s = pump(client, server)
    assert ev_s == [HeadersReceived(1, {"after": "goaway"})]


def test_large_transfer_with_flow_control_both_ways() -> None:
    client = Connection(client=True, flow_control=True)
    server = Connection(flow_control=True)
    sid = client.open_stream({"streamtype": "stdin"})
    pump(client, server)
    server.reply(sid, {})
    pump(client, server)
    up, down = os.urandom(3_000_000), os.urandom(5_000_000)
    client.send_data(sid, up, fin=True)
    server.send_data(sid, down, fin=True)
    # Only one window's worth leaves each side before the peer answers with WINDOW_UPDATE.
    assert client.pending_bytes(sid) == len(up) - 65536
    assert server.pending_bytes() == len(down) - 65536
    assert client.send_window(sid) == 0 and client.send_window() == 0
    ev_c, ev_s = pump(client, server, chunk=7000)
    assert data_of(ev_s, sid) == up and data_of(ev_c, sid) == down
    assert any(isinstance(e, WindowUpdate) and e.stream_id == sid for e in ev_c)
    assert any(isinstance(e, WindowUpdate) and e.stream_id == 0 for e in ev_s)
    assert not any(isinstance(e, ProtocolError) for e in ev_c + ev_s)
    assert client.pending_bytes() == server.pending_bytes() == 0
    assert client.open_streams == server.open_streams == []
    assert all(len(e.data) <= spdy.DEFAULT_MAX_DATA_FRAME for e in ev_c if isinstance(e, Data))


def test_application_paced_window_updates() -> None:
    client = Connection(client=True, flow_control=True, auto_window_update=False)
    server = Connection(flow_control=True)
    sid = client.open_stream({})
    pump(client, server)
    server.reply(sid, {})
    server.send_data(sid, b"a" * 200_000)
    ev_c, _ = pump(client, server)
    assert len(data_of(ev_c, sid)) == 65536  # the sender stalls: nothing was acknowledged
    assert server.pending_bytes(sid) == 200_000 - 65536
    client.acknowledge_received_data(sid, 65536)
    ev_c, _ = pump(client, server)
    assert len(data_of(ev_c, sid)) == 65536


def test_without_flow_control_data_is_never_held_back() -> None:
    # What spdystream does: no WINDOW_UPDATE ever comes back, and the server must not stall.
    server = Connection()
    client = Connection(client=True)
    sid = client.open_stream({"streamtype": "stdout"})
    server.receive_data(client.data_to_send())
    server.reply(sid, {})
    server.send_data(sid, b"b" * 1_000_000, fin=True)
    assert server.pending_bytes() == 0
    assert server.send_window(0) == 65536 - 1_000_000
    assert data_of(client.receive_data(server.data_to_send()), sid) == b"b" * 1_000_000


def test_window_overrun_is_an_error_only_with_flow_control() -> None:
    sender = Connection()  # ignores windows, as spdystream does
    strict = Connection(client=True, flow_control=True, auto_window_update=False)
    a, b = strict.open_stream({}), strict.open_stream({})
    sender.receive_data(strict.data_to_send())
    for sid in (a, b):
        sender.reply(sid, {})
        sender.send_data(sid, b"c" * 20_000)
    strict.receive_data(sender.data_to_send())
    strict.acknowledge_received_data(a, 20_000)
    strict.acknowledge_received_data(b, 20_000)
    # Past half a window consumed, the session window is updated; neither stream's (20000 each).
    assert frames_of(strict.data_to_send()) == [WindowUpdateFrame(0, 40_000)]
    sender.send_data(a, b"c" * 50_000)  # stream a has 45536 left
    events = strict.receive_data(sender.data_to_send())
    assert ProtocolError(f"stream {a} overran its window", a) in events
    assert frames_of(strict.data_to_send())[-1] == RstStreamFrame(a, RstStatus.FLOW_CONTROL_ERROR)
    assert not strict.closed
    sender.send_data(b, b"c" * 200_000)  # more than the whole session window
    events = strict.receive_data(sender.data_to_send())
    assert events[-1] == ProtocolError("the peer overran the session window")
    assert strict.closed
    # The same bytes to a connection without flow_control are simply delivered.
    lenient = Connection(client=True)
    sid = lenient.open_stream({})
    sender2 = Connection()
    sender2.receive_data(lenient.data_to_send())
    sender2.reply(sid, {})
    sender2.send_data(sid, b"c" * 200_000)
    assert len(data_of(lenient.receive_data(sender2.data_to_send()), sid)) == 200_000


def test_settings_initial_window_size() -> None:
    client, server = Connection(client=True, flow_control=True), Connection(flow_control=True)
    sid = client.open_stream({})
    pump(client, server)
    server.reply(sid, {})
    server.send_data(sid, b"d" * 100_000)
    assert server.pending_bytes() == 100_000 - 65536
    client.send_settings({spdy.SettingId.INITIAL_WINDOW_SIZE: 32768})
    wire = client.data_to_send()
    assert wire == h("8003 0004 00 00000c 00000001 00000007 00008000")
    assert server.receive_data(wire) == [Settings({7: 32768})]
    assert server.send_window(sid) == -32768


# -------------------------------------------------------------------------- malformed input


def test_session_error_queues_goaway_and_stops() -> None:
    server = Connection()
    server.receive_data(syn_stream_bytes(1, ZLIB_HEAD + stored(BLOCK_ERROR)))
    events = server.receive_data(h("8002 0006 00 000004 00000001"))
    assert events == [ProtocolError("unsupported SPDY version 2 (only 3 is spoken)")]
    assert server.data_to_send() == h("8003 0007 00 000008 00000001 00000001")
    assert server.closed
    assert server.receive_data(h("8003 0006 00 000004 00000001")) == []


def test_bad_header_block_is_a_session_error() -> None:
    server = Connection()
    events = server.receive_data(syn_stream_bytes(1, ZLIB_HEAD + h("ff ff ff ff ff")))
    assert len(events) == 1 and isinstance(events[0], ProtocolError) and events[0].stream_id is None
    assert "does not decompress" in events[0].message


def test_stream_error_resets_only_that_stream() -> None:
    server = Connection()
    raw = h("00000001 00000001 41 00000001 78")
    events = server.receive_data(
        syn_stream_bytes(1, ZLIB_HEAD + stored(raw)) + syn_stream_bytes(3, stored(BLOCK_STDIN))
    )
    assert events == [
        ProtocolError("stream 1: header name 'A' is not lower case", 1),
        StreamOpened(3, {"streamtype": "stdin"}),
    ]
    assert server.data_to_send() == h("8003 0003 00 000008 00000001 00000001")


def test_frames_for_streams_never_opened() -> None:
    server = Connection()
    events = server.receive_data(h("00000009 00 000002 6869"))
    assert events == [ProtocolError("frame for stream 9, never opened", 9)]
    assert server.data_to_send() == h("8003 0003 00 000008 00000009 00000002")  # INVALID_STREAM


def test_data_after_fin_and_duplicate_syn_stream() -> None:
    server = Connection()
    server.receive_data(syn_stream_bytes(1, ZLIB_HEAD + stored(BLOCK_STDIN)))
    server.reply(1, {})
    server.data_to_send()
    events = server.receive_data(h("00000001 01 000001 61") + h("00000001 00 000001 62"))
    assert events == [Data(1, b"a", fin=True), ProtocolError("DATA after FIN on stream 1", 1)]
    assert server.data_to_send() == h("8003 0003 00 000008 00000001 00000009")  # STREAM_ALREADY_CLOSED
    server.receive_data(syn_stream_bytes(3, stored(BLOCK_STDIN)))
    events = server.receive_data(syn_stream_bytes(3, stored(BLOCK_STDIN)))
    assert events == [ProtocolError("second SYN_STREAM for stream 3", 3)]
    assert server.data_to_send() == h("8003 0003 00 000008 00000003 00000008")  # STREAM_IN_USE


@pytest.mark.parametrize(
    ("second_id", "message"),
    [(1, "not above the previous 3"), (2, "of this side's parity")],
)
def test_bad_stream_ids_are_session_errors(second_id: int, message: str) -> None:
    server = Connection()
    server.receive_data(syn_stream_bytes(3, ZLIB_HEAD + stored(BLOCK_STDIN)))
    events = server.receive_data(syn_stream_bytes(second_id, stored(BLOCK_STDIN)))
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert message in events[0].message and events[0].stream_id is None


def test_headers_after_reply_and_headers_event() -> None:
    client, server = Connection(client=True), Connection()
    sid = client.open_stream({})
    pump(client, server)
    server.reply(sid, {})
    server.send_headers(sid, {"status": "ok"}, fin=True)
    ev_c, _ = pump(client, server)
    assert ev_c == [StreamReply(sid, {}), HeadersReceived(sid, {"status": "ok"}, fin=True)]


def test_eof() -> None:
    server = Connection()
    assert server.receive_data(h("8003 0006")) == []
    assert server.receive_data(b"") == [
        ProtocolError("connection closed inside a frame (4 bytes)"),
        ConnectionClosed(),
    ]
    assert Connection().receive_data(b"") == [ConnectionClosed()]


def test_local_misuse() -> None:
    server = Connection()
    with pytest.raises(LocalProtocolError, match="not open"):
        server.send_data(1, b"x")
    with pytest.raises(LocalProtocolError, match="not open"):
        server.reply(1, {})
    sid = server.open_stream({})
    with pytest.raises(LocalProtocolError, match="cannot be replied"):
        server.reply(sid, {})
