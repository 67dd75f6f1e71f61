"""Pod sandbox records in sqlite: immutable metadata (a frozen dataclass) plus a mutable status,
one row each."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cri_shim.sqlite_store import SqliteStore, dump_record, load_record

CREATING = "creating"
READY = "ready"
NOTREADY = "notready"


@dataclass(frozen=True)
class SandboxMeta:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    config: bytes  # serialized pb.PodSandboxConfig, stored as the container store does
    handler: str
    dir: str  # per-pod state directory
    created_at: int
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    shared_pid: bool = False
    cgroup_parent: str = ""
    # cgroupfs path of the infra process's cgroup (named after the sandbox id); its parent
    # is the pod's cgroup. Empty for pods made before the infra process existed.
    infra_cgroup: str = ""


@dataclass
class SandboxState:
    state: str = CREATING
    ips: list[str] = field(default_factory=list)
    network_ready: bool = False
    # PID 1 of the pod's PID namespace when the pod shares one (the infra process).
    holder_pid: int = 0
    # The infra process and its start time (clock ticks), which tells it from a reused pid.
    infra_pid: int = 0
    infra_start: int = 0
    # CNI DEL has succeeded: RemovePodSandbox after StopPodSandbox need not run it again.
    network_released: bool = False


class SandboxStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, [
            "CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, meta TEXT, status TEXT)"])

    def put(self, meta: SandboxMeta, status: SandboxState) -> None:
        self.execute("INSERT OR REPLACE INTO sandboxes VALUES (?, ?, ?)",
                     (meta.id, dump_record(asdict(meta)), dump_record(asdict(status))))

    def put_status(self, sandbox_id: str, status: SandboxState) -> None:
        self.execute("UPDATE sandboxes SET status = ? WHERE id = ?",
                     (dump_record(asdict(status)), sandbox_id))

    def delete(self, sandbox_id: str) -> None:
        # The last step of a teardown (everything the record names is gone): no fsync of its own.
        self.execute_unsynced("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def load(self) -> list[tuple[SandboxMeta, SandboxState]]:
        rows = self.execute("SELECT meta, status FROM sandboxes")
        return [(SandboxMeta(**_meta_fields(load_record(m))), SandboxState(**load_record(s)))
                for m, s in rows]


def _meta_fields(d: dict[str, Any]) -> dict[str, Any]:
    """Records written before the config was stored as bytes carry it as a "config_hex" string."""
    if "config_hex" in d:
        d["config"] = bytes.fromhex(d.pop("config_hex"))
    return d
