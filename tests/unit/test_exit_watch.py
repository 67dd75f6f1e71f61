"""The sans-IO part of conmon exit-file notification: inotify event records to names."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from cri_shim.containers import exit_watch


def record(name: bytes, mask: int = exit_watch.IN_MOVED_TO, pad: int = 16) -> bytes:
    raw = name + b"\0" * (pad - len(name) % pad if name else 0)
    return struct.pack("iIII", 1, mask, 0, len(raw)) + raw


def test_names_from_several_records() -> None:
    data = record(b"abc") + record(b"0123456789abcdef0123") + record(b"x", exit_watch.IN_CLOSE_WRITE)
    assert exit_watch.parse_events(data) == ["abc", "0123456789abcdef0123", "x"]


def test_overflow_asks_for_a_rescan_and_nameless_records_are_skipped() -> None:
    data = record(b"", exit_watch.IN_Q_OVERFLOW) + record(b"") + record(b"c1")
    assert exit_watch.parse_events(data) == [None, "c1"]


def test_a_truncated_tail_is_ignored() -> None:
    assert exit_watch.parse_events(record(b"c1") + b"\x01\x00") == ["c1"]


def test_watch_reports_a_renamed_file(tmp_path: Path) -> None:
    async def main() -> list[str | None]:
        seen: list[str | None] = []
        got = asyncio.Event()
        w = exit_watch.ExitWatch(tmp_path, lambda n: (seen.append(n), got.set()))
        assert w.start()
        try:
            (tmp_path / ".tmp").write_text("0")
            (tmp_path / ".tmp").rename(tmp_path / "cid")
            await asyncio.wait_for(got.wait(), 5)
            await asyncio.sleep(0.01)
        finally:
            w.close()
        return seen

    seen = asyncio.run(main())
    assert "cid" in seen


def test_catch_up_handles_what_is_queued_and_nothing_else(tmp_path: Path) -> None:
    """catch_up, from inside a loop callback (a Status call), reports an exit file written
    before it without waiting for the loop; with nothing queued it reports nothing."""
    async def main() -> list[list[str | None]]:
        seen: list[str | None] = []
        w = exit_watch.ExitWatch(tmp_path, seen.append)
        assert w.start()
        steps = []
        try:
            w.catch_up()
            steps.append(list(seen))
            (tmp_path / "c1").write_text("0")
            w.catch_up()  # the loop has not run its reader yet
            steps.append(list(seen))
            w.catch_up()
            steps.append(list(seen))
        finally:
            w.close()
        return steps

    assert asyncio.run(main()) == [[], ["c1"], ["c1"]]
