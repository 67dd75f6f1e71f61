"""The one atomic writer: the crash-safety order, exact modes, and nothing left half-done."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cri_shim import atomic_file
from oci import atomic_file as writer


class Recorder:
    """Wraps the calls the writer makes (on `posix`, which `os` re-exports), logging what each
    touched, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fds: dict[int, str] = {}
        real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

        def open_(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
            fd = real_open(path, flags, mode, **kw)
            self.fds[fd] = os.fspath(path)
            return fd

        def fsync(fd: int) -> None:
            self.calls.append(("fsync", self.fds.get(fd, "?")))
            real_fsync(fd)

        def replace(src: Any, dst: Any) -> None:
            self.calls.append(("rename", f"{os.fspath(src)} -> {os.fspath(dst)}"))
            real_replace(src, dst)

        monkeypatch.setattr(writer.posix, "open", open_)
        monkeypatch.setattr(writer.posix, "fsync", fsync)
        monkeypatch.setattr(writer.posix, "replace", replace)


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    yield Recorder(monkeypatch)


def test_crash_order_temp_fsync_rename_dir_fsync(tmp_path: Path, rec: Recorder) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    writer.write_atomic(target, b"new", 0o600)
    assert target.read_text() == "new"
    [(k1, tmp), (k2, rename), (k3, d)] = rec.calls
    assert (k1, k2, k3) == ("fsync", "rename", "fsync")
    assert Path(tmp).parent == tmp_path and Path(tmp).name.startswith(".state.json.")
    assert rename == f"{tmp} -> {target}"
    assert d == str(tmp_path)  # the directory, after the rename: that makes the rename durable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_commit_of_a_streamed_temp_file_has_the_same_order(tmp_path: Path, rec: Recorder) -> None:
    ingest, blobs = tmp_path / "ingest", tmp_path / "blobs"
    ingest.mkdir()
    blobs.mkdir()
    (ingest / "x").write_bytes(b"blob")  # written by a download, not fsynced by it
    writer.commit(ingest / "x", blobs / "x")
    assert [k for k, _ in rec.calls] == ["fsync", "rename", "fsync"]
    assert rec.calls[0][1] == str(ingest / "x") and rec.calls[2][1] == str(blobs)
    assert (blobs / "x").read_bytes() == b"blob" and not (ingest / "x").exists()


def test_not_durable_skips_only_the_fsyncs(tmp_path: Path, rec: Recorder) -> None:
    writer.write_atomic(tmp_path / "progress.json", "{}", durable=False)
    assert [k for k, _ in rec.calls] == ["rename"]


def test_a_state_file_is_renamed_into_place_without_fsyncs(tmp_path: Path, rec: Recorder) -> None:
    # The state directory's files (a pod's hosts, a bundle's config.json): atomic, not durable.
    atomic_file.write_state(tmp_path / "pods" / "p1" / "hosts", "127.0.0.1 localhost\n")
    atomic_file.write_state(tmp_path / "cni-result.json", "{}", atomic_file.PRIVATE_FILE)
    assert [k for k, _ in rec.calls] == ["rename", "rename"]
    assert (tmp_path / "pods" / "p1" / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert stat.S_IMODE((tmp_path / "cni-result.json").stat().st_mode) == atomic_file.PRIVATE_FILE


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_mode_is_exact_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o077)
    try:
        writer.write_atomic(tmp_path / "f", "x", mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


def test_a_private_file_is_never_created_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[int] = []
    real_open = os.open

    def open_(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        modes.append(mode)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(writer.posix, "open", open_)
    writer.write_atomic(tmp_path / "config.json", "secret", atomic_file.PRIVATE_FILE)
    assert modes[0] == 0o600  # the temp file holds the secret from its first byte


def _fail(name: str) -> Callable[..., Any]:
    def f(*a: Any) -> Any:
        raise OSError(28, f"{name}: No space left on device")
    return f


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              step: str) -> None:
    target = tmp_path / "hosts"
    target.write_text("old")
    monkeypatch.setattr(writer.posix, step, _fail(step))
    with pytest.raises(OSError, match=step):
        writer.write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]


def test_temp_files_can_live_elsewhere(tmp_path: Path) -> None:
    ingest, blobs = tmp_path / "ingest", tmp_path / "blobs"
    ingest.mkdir()
    blobs.mkdir()
    writer.write_atomic(blobs / "abc", b"data", tmp_dir=ingest)
    assert [p.name for p in blobs.iterdir()] == ["abc"]  # a crash would leave junk in ingest/ only
    assert list(ingest.iterdir()) == []


def test_a_leftover_temp_file_of_a_crash_is_overwritten(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer._thread, "get_ident", lambda: 7)
    (tmp_path / f".f.{os.getpid()}.7.tmp").write_text("half")
    writer.write_atomic(tmp_path / "f", "whole")
    assert [p.name for p in tmp_path.iterdir()] == ["f"] and (tmp_path / "f").read_text() == "whole"


def test_cri_shim_writer_makes_the_directory(tmp_path: Path) -> None:
    atomic_file.write_atomic(tmp_path / "pods" / "p1" / "resolv.conf", "nameserver 1.1.1.1\n")
    p = tmp_path / "pods" / "p1" / "resolv.conf"
    assert p.read_text() == "nameserver 1.1.1.1\n"
    assert stat.S_IMODE(p.stat().st_mode) == atomic_file.SHARED_FILE  # bind-mounted: any user reads it


def test_relative_and_dotdot_paths_resolve_as_the_kernel_does(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file goes beside the target as the kernel finds it: through a symlink before a
    "..", that is not where a lexical clean-up of the path would put it."""
    monkeypatch.chdir(tmp_path)
    writer.write_atomic("plain", b"1", durable=True)
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to("elsewhere/deep")
    writer.write_atomic("link/../f", b"2", durable=True)  # link/.. is elsewhere, not tmp_path
    assert (tmp_path / "plain").read_bytes() == b"1"
    assert (tmp_path / "elsewhere" / "f").read_bytes() == b"2" and not (tmp_path / "f").exists()
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["deep", "f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link", "plain"]
