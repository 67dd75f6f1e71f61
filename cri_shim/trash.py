"""Deleting directory trees after the call that removed them has answered.

RemoveContainer's last work was deleting two small trees (the bundle and the rootfs
directory), most of its time: each directory freed is a block, and where the file system
discards freed blocks at once (ext4 without a journal, mounted `discard`) every one is a
device command. A tree is now renamed into a trash directory beside it (same file system,
one rename), which is all the caller waits for; one background task empties the trash a
little later (EMPTY_AFTER), once that call has answered.
Whatever a crash leaves there is removed at the next start, so nothing is lost or leaked:
what is in the trash is already forgotten by every record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger("cri_shim.trash")


# How long emptying waits after it is asked for: the call that removed the trees finishes and
# answers first (its last steps and the emptying's rmtree would share the interpreter), and the
# removals of a burst (a pod's containers) are emptied together.
EMPTY_AFTER = 0.1


class Trash:
    def __init__(self, where: Path) -> None:
        self.where = where
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._again = False

    def discard(self, path: Path) -> bool:
        """Move path (a directory tree or a file) into the trash: one rename. Blocking; False when it
        could not be moved (then the caller deletes it itself). A missing path is done."""
        try:
            self.where.mkdir(mode=0o700, exist_ok=True)
            os.rename(path, self.where / f"{path.name}.{secrets.token_hex(4)}")
            return True
        except FileNotFoundError:
            return not path.exists()
        except OSError:
            return False

    def remove(self, path: Path) -> None:
        """Blocking: path gone from where it was, now (its contents soon)."""
        if not self.discard(path):
            shutil.rmtree(path, ignore_errors=True)

    def empty_soon(self) -> None:
        """Have the background task empty the trash in EMPTY_AFTER seconds (one task, which
        runs while there is work)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(EMPTY_AFTER, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._empty())

    async def _empty(self) -> None:
        while True:
            self._again = False
            try:
                await asyncio.to_thread(self._empty_now)
            except Exception as e:  # noqa: BLE001 - the next removal or start tries again
                log.warning("emptying %s: %s", self.where, e)
            if not self._again:
                return

    def _empty_now(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.where):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    async def close(self) -> None:
        """Empty what is waiting, or let a running emptying finish (the daemon is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._start()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
