"""A pull's progress: logged at an interval, and kept in a small JSON file under
<state_dir>/pulls/ that `cri-shim images pull` draws."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from cri_shim.atomic_file import SHARED_FILE, write_atomic

log = logging.getLogger("cri_shim.images")


def progress_file(state_dir: str, ref: str) -> Path:
    """Where a pull of ref publishes its progress for `cri-shim images pull` to draw."""
    return Path(state_dir) / "pulls" / (hashlib.sha256(ref.encode()).hexdigest()[:24] + ".json")


class Progress:
    """Logs a pull's progress at an interval and keeps a small JSON file current for the CLI."""

    FILE_INTERVAL = 0.2

    def __init__(self, ref: str, total: int, interval: float, path: Path) -> None:
        self.ref, self.total, self.interval, self.path = ref, total, interval, path
        self.done_bytes = 0
        self.last_log = self.last_file = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write(False)

    def _write(self, finished: bool) -> None:
        # Not durable: only a live `images pull` reads it, and a crash ends the pull anyway.
        write_atomic(self.path, json.dumps({"ref": self.ref, "done": self.done_bytes,
                                            "total": self.total, "finished": finished}),
                     SHARED_FILE, durable=False)

    def add(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if now - self.last_log >= self.interval:
            self.last_log = now
            log.info("pulling %s: %d / %d bytes", self.ref, self.done_bytes, self.total)
        if now - self.last_file >= self.FILE_INTERVAL:
            self.last_file = now
            self._write(False)

    def done(self) -> None:
        log.info("pulling %s: %d / %d bytes, done", self.ref, self.done_bytes, self.total)
        self._write(True)
