"""Container set-up through the syscall seam, without root: the mount calls are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci.pyrunc import mounts
from oci.pyrunc import syscalls as sc


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    seen: list[tuple] = []
    monkeypatch.setattr(sc, "mount", lambda *a: seen.append(a))
    monkeypatch.setattr(mounts.posix, "statvfs", lambda p: type("S", (), {"f_flag": 0})())
    return seen


def test_masked_paths_bind_dev_null_over_files_and_ro_tmpfs_over_dirs(tmp_path: Path, calls: list) -> None:
    (tmp_path / "kcore").write_text("")
    (tmp_path / "acpi").mkdir()
    mounts.mask_paths([str(tmp_path / "kcore"), str(tmp_path / "acpi"), str(tmp_path / "missing")])
    assert calls == [("/dev/null", str(tmp_path / "kcore"), None, sc.MS_BIND, None),
                     ("tmpfs", str(tmp_path / "acpi"), "tmpfs", sc.MS_RDONLY, None)]


def test_readonly_paths_bind_then_remount_ro(tmp_path: Path, calls: list) -> None:
    p = str(tmp_path)
    mounts.readonly_paths([p, str(tmp_path / "missing")], userns=False)
    assert calls[0] == (p, p, None, sc.MS_BIND | sc.MS_REC, None)
    assert calls[1][1] == p and calls[1][3] & (sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_BIND) == (
        sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_BIND)
    assert len(calls) == 2


def test_ro_bind_mount_is_remounted(tmp_path: Path, calls: list) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    src = tmp_path / "data"
    src.mkdir()
    mounts.mount_one(str(rootfs), str(tmp_path), {"destination": "/data", "type": "bind", "source": "data",
                                                  "options": ["rbind", "ro", "nosuid", "rprivate"]}, {})
    dest = str(rootfs / "data")
    assert (rootfs / "data").is_dir()
    assert calls[0] == (str(src), dest, None, sc.MS_BIND | sc.MS_REC, None)
    assert calls[1][3] & sc.MS_REMOUNT and calls[1][3] & sc.MS_RDONLY and calls[1][3] & sc.MS_NOSUID
    assert calls[2] == (None, dest, None, sc.MS_PRIVATE | sc.MS_REC, None)


def test_tmpfs_mount_passes_data_and_flags(tmp_path: Path, calls: list) -> None:
    m = {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}
    mounts.mount_one(str(tmp_path), str(tmp_path), m, {})
    assert calls == [("shm", str(tmp_path / "dev/shm"), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
                      "mode=1777,size=65536k")]
