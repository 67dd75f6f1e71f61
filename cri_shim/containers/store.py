"""Container records in sqlite: an immutable metadata part (a frozen dataclass, replaced whole
once the runtime has created the container) and a mutable status part.

Every write is one transaction; the in-memory index in the manager is rebuilt from
here on start-up. Records are written before the things they describe exist, so a
crash leaves a record in state "creating" that recovery cleans up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from cri_shim.sqlite_store import SqliteStore, dump_record, load_record

# Lifecycle states; CRI's CONTAINER_UNKNOWN is reported for "creating" leftovers.
CREATING = "creating"
CREATED = "created"
RUNNING = "running"
EXITED = "exited"


@dataclass(frozen=True)
class ContainerMeta:
    id: str
    pod_id: str
    name: str
    attempt: int
    # Serialized pb.ContainerConfig, kept whole so status and recovery see what was asked.
    config: bytes
    image_ref: str  # what the request named
    image_id: str  # config digest
    image_repo_ref: str  # repo digest (image_ref in CRI status)
    handler: str
    bundle: str
    log_path: str
    created_at: int  # ns
    stop_signal: str = "SIGTERM"
    cgroups_path: str = ""
    uid: int = 0
    gid: int = 0
    supplemental_groups: list[int] = field(default_factory=list)
    # The root file system prepared for it (an overlay mount, or a directory), once created.
    rootfs: str = ""


@dataclass
class ContainerState:
    state: str = CREATING
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    # Last resources applied by UpdateContainerResources (serialized pb.LinuxContainerResources).
    resources: bytes = b""


class ContainerStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, ["CREATE TABLE IF NOT EXISTS containers ("
                                " id TEXT PRIMARY KEY, meta TEXT NOT NULL, status TEXT NOT NULL)"])

    def put(self, meta: ContainerMeta, status: ContainerState) -> None:
        self.execute("INSERT OR REPLACE INTO containers (id, meta, status) VALUES (?, ?, ?)",
                     (meta.id, dump_record(asdict(meta)), dump_record(asdict(status))))

    def put_status(self, container_id: str, status: ContainerState) -> None:
        self.execute("UPDATE containers SET status = ? WHERE id = ?",
                     (dump_record(asdict(status)), container_id))

    def delete(self, container_id: str) -> None:
        # The last step of a teardown (everything the record names is gone): no fsync of its own.
        self.execute_unsynced("DELETE FROM containers WHERE id = ?", (container_id,))

    def load(self) -> list[tuple[ContainerMeta, ContainerState]]:
        rows = self.execute("SELECT meta, status FROM containers")
        return [(ContainerMeta(**load_record(m)), ContainerState(**load_record(s))) for m, s in rows]
