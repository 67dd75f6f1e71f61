"""cri_shim.trash: a removed tree leaves its place at once and is deleted in the background."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cri_shim.trash import Trash


def make_tree(p: Path) -> Path:
    (p / "a" / "b").mkdir(parents=True)
    (p / "a" / "b" / "f").write_text("x")
    return p


def test_remove_moves_then_empty_deletes(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    tree = make_tree(tmp_path / "ctr1")
    file = tmp_path / "exit-file"
    file.write_text("0")

    async def go() -> None:
        assert trash.discard(file) and not file.exists()  # a file goes the same way
        trash.remove(tree)
        assert not tree.exists()
        assert len(list((tmp_path / "trash").iterdir())) == 2  # moved, not yet deleted
        trash.empty_soon()
        trash.empty_soon()  # a second request while one runs is folded in
        await trash.close()

    asyncio.run(go())
    assert list((tmp_path / "trash").iterdir()) == []


def test_same_name_twice_and_missing(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    trash.remove(make_tree(tmp_path / "x"))
    trash.remove(make_tree(tmp_path / "x"))
    assert len(list((tmp_path / "trash").iterdir())) == 2
    trash.remove(tmp_path / "never-there")  # nothing to do, no error


def test_a_tree_that_cannot_be_moved_is_deleted_in_place(tmp_path: Path) -> None:
    blocker = tmp_path / "trash"
    blocker.write_text("a file where the trash directory should be")
    trash = Trash(blocker)
    tree = make_tree(tmp_path / "y")
    trash.remove(tree)
    assert not tree.exists()


def test_emptying_waits_for_the_removing_call_to_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trash is emptied EMPTY_AFTER seconds after it is asked, not while the call that
    removed the tree still runs; a second ask in between is folded in; close() empties what is
    waiting."""
    monkeypatch.setattr("cri_shim.trash.EMPTY_AFTER", 0.05)
    trash = Trash(tmp_path / "trash")

    async def go() -> None:
        trash.remove(make_tree(tmp_path / "a"))
        trash.empty_soon()
        await asyncio.sleep(0.01)  # the rest of the removing call, and its answer
        assert len(list((tmp_path / "trash").iterdir())) == 1, "emptied before the call answered"
        trash.remove(make_tree(tmp_path / "b"))
        trash.empty_soon()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not list((tmp_path / "trash").iterdir()):
                break
        assert list((tmp_path / "trash").iterdir()) == []
        trash.remove(make_tree(tmp_path / "c"))
        trash.empty_soon()
        await trash.close()  # the daemon stops before the timer fires
        assert list((tmp_path / "trash").iterdir()) == []

    asyncio.run(go())
