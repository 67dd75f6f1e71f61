"""The one way cri-shim opens its sqlite databases: WAL, full sync, one lock per connection.

Each call is its own transaction (autocommit), so a record is on disk when the call
returns; the stores call it from worker threads as well as from the event loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from cri_shim.atomic_file import PRIVATE_FILE


class SqliteStore:
    def __init__(self, path: Path, schema: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created (or tightened) root-only before sqlite opens it: the records hold whole
        # CRI configs, env values included. sqlite gives -wal and -shm the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if p.exists():
                os.chmod(p, PRIVATE_FILE)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in schema:
            self._db.execute(statement)

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def execute_unsynced(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        """A write that need not be on disk when the call returns: committed without an fsync
        (synchronous=NORMAL for this one transaction). It stays in order: the next ordinary
        write syncs the log, this one with it, so a crash can lose only this write and those
        after it, never one before. For the last step of a teardown: the deletion of a record
        whose objects are already gone, which a crash can only bring back as a record of
        nothing (removed again, tolerantly)."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute(sql, args)
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def dump_record(d: dict[str, Any]) -> str:
    """A record as JSON; bytes fields as hex, named under "__bytes__" so load_record restores them."""
    return json.dumps({k: (v.hex() if isinstance(v, bytes) else v) for k, v in d.items()}
                      | {"__bytes__": [k for k, v in d.items() if isinstance(v, bytes)]})


def load_record(text: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(text)
    for k in d.pop("__bytes__", []):
        d[k] = bytes.fromhex(d[k])
    return d
