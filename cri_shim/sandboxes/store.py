"""Pod sandbox records in sqlite: immutable metadata plus a mutable status, one row each."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

CREATING = "creating"
READY = "ready"
NOTREADY = "notready"


@dataclass
class SandboxMeta:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    config_hex: str  # serialized pb.PodSandboxConfig
    handler: str
    dir: str  # per-pod state directory
    created_at: int
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    shared_pid: bool = False
    cgroup_parent: str = ""


@dataclass
class SandboxState:
    state: str = CREATING
    ips: list[str] = field(default_factory=list)
    network_ready: bool = False
    holder_pid: int = 0


class SandboxStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, meta TEXT, status TEXT)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, meta: SandboxMeta, status: SandboxState) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO sandboxes VALUES (?, ?, ?)",
                             (meta.id, json.dumps(asdict(meta)), json.dumps(asdict(status))))

    def put_status(self, sandbox_id: str, status: SandboxState) -> None:
        with self._lock:
            self._db.execute("UPDATE sandboxes SET status = ? WHERE id = ?",
                             (json.dumps(asdict(status)), sandbox_id))

    def delete(self, sandbox_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def load(self) -> list[tuple[SandboxMeta, SandboxState]]:
        with self._lock:
            rows = self._db.execute("SELECT meta, status FROM sandboxes").fetchall()
        return [(SandboxMeta(**json.loads(m)), SandboxState(**json.loads(s))) for m, s in rows]
