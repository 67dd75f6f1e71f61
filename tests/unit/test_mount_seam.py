"""Managers' mount logic through cri_shim.mounts with a fake host: no root, no real mounts."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from cri_shim import mounts
from cri_shim.config import Config
from cri_shim.errors import Internal
from cri_shim.imaging.manager import ImageManager
from cri_shim.imaging.store import ImageRecord


class FakeHost:
    """A mount table in memory, shaped like /proc/self/mountinfo."""

    def __init__(self) -> None:
        self.table: list[tuple[str, str, str, int, str]] = []  # source, target, fstype, flags, data
        self.calls: list[tuple[str, ...]] = []
        self.busy: set[str] = set()

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.calls.append(("mount", target))
        self.table.append((source, target, fstype, flags, data))

    def umount2(self, target: str, flags: int) -> None:
        self.calls.append(("umount2", target, str(flags)))
        if target in self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        stacked = [i for i, m in enumerate(self.table) if m[1] == target]
        if not stacked:  # as the kernel answers for a path that is not a mount point
            raise OSError(errno.EINVAL, "Invalid argument")
        del self.table[stacked[-1]]

    def mountinfo(self) -> str:
        return "".join(f"{i + 30} 1 0:{i} / {m[1]} rw - {m[2]} {m[0]} rw\n" for i, m in enumerate(self.table))


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost()
    monkeypatch.setattr(mounts, "host", fake)
    return fake


def test_unmount_detaches_every_stacked_mount(host: FakeHost, tmp_path: Path) -> None:
    mounts.mount("shm", tmp_path, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV, "size=64m", "shm")
    mounts.mount("shm", tmp_path, "tmpfs", 0, "", "shm")
    assert mounts.is_mounted(tmp_path)
    mounts.unmount(tmp_path)
    assert not mounts.is_mounted(tmp_path)
    detach = ("umount2", str(tmp_path), str(mounts.MNT_DETACH | mounts.UMOUNT_NOFOLLOW))
    # both taken off, then the kernel's "not a mount point" ends it
    assert [c for c in host.calls if c[0] == "umount2"] == [detach] * 3
    mounts.unmount(tmp_path)  # nothing mounted: one question, nothing undone
    assert host.calls[5:] == [detach] and host.table == []


def test_unmount_of_a_missing_path_is_done(tmp_path: Path) -> None:
    mounts.unmount(tmp_path / "gone" / "merged")  # the real host: ENOENT
    (tmp_path / "file").write_text("")
    mounts.unmount(tmp_path / "file" / "merged")  # ENOTDIR


def test_a_failing_unmount_names_the_path(host: FakeHost, tmp_path: Path) -> None:
    mounts.mount("shm", tmp_path, "tmpfs", 0, "", "shm")
    host.busy.add(str(tmp_path))
    with pytest.raises(Internal, match=f"unmounting {tmp_path}: Device or resource busy"):
        mounts.unmount(tmp_path)


def _manager(tmp_path: Path) -> tuple[ImageManager, Path]:
    cfg = Config(state_dir=str(tmp_path / "state"), root_dir=str(tmp_path / "root"))
    m = ImageManager(cfg, collect_garbage=False)
    n = m.db.reserve_layer("sha256:" + "c" * 64)
    lower = m.snapshot_dir(n) / "fs"
    lower.mkdir(parents=True)
    m.images["sha256:" + "a" * 64] = ImageRecord(id="sha256:" + "a" * 64, chain=["sha256:" + "c" * 64])
    return m, lower


def test_image_manager_rootfs_mounts_and_releases_an_overlay(host: FakeHost, tmp_path: Path) -> None:
    async def run() -> None:
        m, lower = _manager(tmp_path)
        await m.start()
        merged = await m.prepare_rootfs("ctr1", "sha256:" + "a" * 64)
        d = m.ctr_root / "ctr1"
        assert merged == d / "merged"
        [(source, target, fstype, flags, data)] = host.table
        assert (source, target, fstype, flags) == ("overlay", str(merged), "overlay", 0)
        assert data == f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}"
        assert m.db.snapshots() == {"ctr1": "sha256:" + "a" * 64}

        await m.release_rootfs("ctr1")
        assert host.table == [] and not d.exists() and m.db.snapshots() == {}
        await m.release_rootfs("ctr1")  # idempotent: RemoveContainer may run twice
        await m.stop()

    asyncio.run(run())


def test_image_manager_keeps_the_record_when_the_overlay_is_busy(host: FakeHost, tmp_path: Path) -> None:
    async def run() -> None:
        m, _ = _manager(tmp_path)
        await m.start()
        merged = await m.prepare_rootfs("ctr1", "sha256:" + "a" * 64)
        host.busy.add(str(merged))
        with pytest.raises(Internal, match="unmounting"):
            await m.release_rootfs("ctr1")
        # Nothing under a still-mounted root file system was deleted, and the record says so.
        assert (m.ctr_root / "ctr1" / "upper").is_dir() and m.db.snapshots() == {"ctr1": "sha256:" + "a" * 64}
        await m.stop()

    asyncio.run(run())


def test_layer_rows_a_crash_brought_back_are_dropped_at_start(host: FakeHost, tmp_path: Path) -> None:
    """The garbage collection deletes a layer's row without an fsync once its tree is gone;
    a crash can bring the row back, and the next start must drop it before any pull could
    take it for a committed layer."""
    async def run() -> None:
        cfg = Config(state_dir=str(tmp_path / "state"), root_dir=str(tmp_path / "root"))
        m = ImageManager(cfg)
        kept = "sha256:" + "a" * 64
        n_kept = m.db.reserve_layer(kept)
        (m.snapshot_dir(n_kept) / "fs").mkdir(parents=True)
        m.db.put_image(ImageRecord(id="sha256:" + "b" * 64, chain=[kept]))
        n_gone = m.db.reserve_layer("sha256:" + "c" * 64)  # the row of nothing: no tree, no image
        assert not m.snapshot_dir(n_gone).exists()
        await m.start()
        assert [(c, n) for c, n, _ in m.db.layers()] == [(kept, n_kept)]
        assert (m.snapshot_dir(n_kept) / "fs").is_dir()
        await m.stop()

    asyncio.run(run())
