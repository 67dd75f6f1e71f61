"""The fast tar header reader gives what tarfile gives, and leaves every other case to it."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from cri_shim.errors import InvalidArgument
from cri_shim.imaging import layers
from cri_shim.imaging.tar_headers import next_member, parse_plain

FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname",
          "gname", "devmajor", "devminor", "offset", "offset_data", "pax_headers", "sparse")


def add(t: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
        **attrs: object) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mtime, ti.mode = kind, len(data), 1_700_000_000, 0o644
    for k, v in attrs.items():
        setattr(ti, k, v)
    t.addfile(ti, io.BytesIO(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else None)


def archive(fmt: int, members: list[dict[str, object]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for m in members:
            add(t, **m)  # type: ignore[arg-type]
    return buf.getvalue()


MEMBERS: list[dict[str, object]] = [
    {"name": "d", "kind": tarfile.DIRTYPE, "mode": 0o755},
    {"name": "d/f", "data": b"hello\n" * 200, "uid": 1000, "gid": 1001, "uname": "u", "gname": "g"},
    {"name": "d/empty"},
    {"name": "d/setuid", "data": b"x", "mode": 0o4755},
    {"name": "d/link", "kind": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
    {"name": "d/hard", "kind": tarfile.LNKTYPE, "linkname": "d/f"},
    {"name": "d/null", "kind": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3},
    {"name": "d/blk", "kind": tarfile.BLKTYPE, "devmajor": 7, "devminor": 0},
    {"name": "d/fifo", "kind": tarfile.FIFOTYPE},
    # ustar splits this into prefix and name; GNU and pax write a long-name header
    {"name": "p/" + "x" * 90 + "/" + "y" * 60, "data": b"long"},
    {"name": "d/\u00e9t\u00e9", "data": b"utf-8 name"},  # pax header in PAX_FORMAT
    {"name": "d/big-uid", "data": b"1", "uid": 0o7777777 + 1},  # pax (PAX) or base-256 (GNU)
]


def both_ways(data: bytes) -> tuple[list[tarfile.TarInfo], list[tarfile.TarInfo], int]:
    """Members read by tarfile alone, and by next_member; and how many the fast path read."""
    plain = list(tarfile.open(fileobj=io.BytesIO(data), mode="r:"))
    fwd = layers._ForwardReader(io.BytesIO(data))  # type: ignore[arg-type]
    tar = tarfile.open(fileobj=fwd, mode="r:")  # type: ignore[call-overload]
    fast, quick = [], 0
    while True:
        before = tar.offset
        m = next_member(tar, fwd)
        if m is None:
            break
        quick += m.offset == before and tar.firstmember is None and not m.pax_headers
        fast.append(m)
        if m.isreg():
            fwd.seek(m.offset_data + m.size)
    return plain, fast, quick


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_member_as_tarfile_reads_it(fmt: int) -> None:
    members = [m for m in MEMBERS if fmt != tarfile.USTAR_FORMAT
               or (m["name"] != "d/\u00e9t\u00e9" and m.get("uid", 0) <= 0o7777777)]
    plain, fast, quick = both_ways(archive(fmt, members))
    assert [m.name for m in plain] == [m["name"] for m in members]
    for a, b in zip(plain, fast, strict=True):
        assert {f: getattr(a, f) for f in FIELDS} == {f: getattr(b, f) for f in FIELDS}, a.name
    assert quick >= len(members) - 4  # the plain headers did take the fast path


def test_v7_directory_and_odd_headers_go_where_tarfile_sends_them() -> None:
    # a V7 directory: a regular-file type whose name ends in "/"
    v7 = tarfile.TarInfo("olddir/")
    v7.type, v7.mode = tarfile.AREGTYPE, 0o755
    buf = v7.tobuf(tarfile.USTAR_FORMAT)
    m = parse_plain(buf, "utf-8", "surrogateescape")
    assert m is not None and m.isdir() and m.name == "olddir"
    # a bad checksum, a pax header, base-256 numbers, a short block: left to tarfile
    bad = bytearray(buf)
    bad[0] ^= 1
    assert parse_plain(bytes(bad), "utf-8", "surrogateescape") is None
    pax = tarfile.TarInfo("x")
    pax.pax_headers = {"comment": "hi"}
    assert parse_plain(pax.tobuf(tarfile.PAX_FORMAT)[:512], "utf-8", "surrogateescape") is None
    gnu = tarfile.TarInfo("x")
    gnu.uid = 1 << 30
    assert parse_plain(gnu.tobuf(tarfile.GNU_FORMAT), "utf-8", "surrogateescape") is None
    assert parse_plain(buf[:300], "utf-8", "surrogateescape") is None
    assert parse_plain(b"\0" * 512, "utf-8", "surrogateescape") is None  # end of archive


def test_global_pax_headers_apply_to_later_members() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"mtime": "1234.5"}) as t:
        add(t, "a", data=b"1")
        add(t, "b", data=b"2")
    plain, fast, _ = both_ways(buf.getvalue())
    assert [(m.name, m.mtime) for m in fast] == [(m.name, m.mtime) for m in plain]
    assert all(m.mtime == 1234.5 for m in fast)


def outcome(read: object) -> list[str] | str:
    try:
        return [m.name for m in read()]  # type: ignore[operator]
    except (tarfile.TarError, EOFError) as e:
        return type(e).__name__


def test_truncated_archives_end_or_fail_as_with_tarfile(tmp_path: Path) -> None:
    data = archive(tarfile.GNU_FORMAT, MEMBERS)
    for cut in range(512, len(data), 256):
        part = data[:cut]
        alone = outcome(lambda part=part: list(tarfile.open(fileobj=io.BytesIO(part), mode="r:")))
        assert outcome(lambda part=part: both_ways(part)[1]) == alone, cut
    # cut inside a file's data: the unpack fails (a cut between members ends the tar, as
    # tarfile reads it; the layer's digest check is what refuses that one)
    src = tmp_path / "cut.tar"
    src.write_bytes(data[:1024 + 100])
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        layers.unpack(src, tmp_path / "out", "cut")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown and device nodes need root")
def test_unpacked_modes_and_owners(tmp_path: Path) -> None:
    data = archive(tarfile.GNU_FORMAT, MEMBERS + [
        {"name": "d/secret", "data": b"s", "mode": 0o000},
        {"name": "d/group-w", "data": b"g", "mode": 0o664},  # masked by a 022 umask at create
        {"name": "d/setgid-owned", "data": b"s", "mode": 0o2755, "uid": 5, "gid": 6},
    ])
    src = tmp_path / "layer.tar"
    src.write_bytes(data)
    old = os.umask(0o022)
    try:
        layers.unpack(src, tmp_path / "out", "modes")
    finally:
        os.umask(old)
    out = tmp_path / "out" / "d"

    def mode_owner(name: str) -> tuple[int, int, int]:
        st = os.lstat(out / name)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    assert mode_owner("f") == (0o644, 1000, 1001)
    assert mode_owner("setuid") == (0o4755, 0, 0)
    assert mode_owner("secret") == (0o000, 0, 0)
    assert mode_owner("group-w") == (0o664, 0, 0)
    assert mode_owner("setgid-owned") == (0o2755, 5, 6)
    assert mode_owner("big-uid")[1] == 0o7777777 + 1
    assert (out / "f").read_bytes() == b"hello\n" * 200
    assert stat.S_ISCHR(os.lstat(out / "null").st_mode) and os.lstat(out / "null").st_rdev == os.makedev(1, 3)
    assert (tmp_path / "out" / ("p/" + "x" * 90 + "/" + "y" * 60)).read_bytes() == b"long"
    assert (out / "\u00e9t\u00e9").read_bytes() == b"utf-8 name"
