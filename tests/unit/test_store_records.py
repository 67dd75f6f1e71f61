"""Both stores write a record's serialized CRI config the same way (bytes as hex, marked), and a
sandbox record written before that (its config as a "config_hex" string) still loads."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from cri_shim.containers.store import ContainerMeta, ContainerState, ContainerStore
from cri_shim.criapi import api_pb2 as pb
from cri_shim.sandboxes.store import READY, SandboxMeta, SandboxState, SandboxStore

POD_CONFIG = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="web", namespace="ns", uid="u"),
                                 hostname="web-0")


def sandbox_meta() -> SandboxMeta:
    return SandboxMeta(id="p1", name="web", namespace="ns", uid="u", attempt=0,
                       config=POD_CONFIG.SerializeToString(), handler="runc", dir="/run/x/p1", created_at=1)


def test_sandbox_record_round_trip(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "sandboxes.db")
    store.put(sandbox_meta(), SandboxState(state=READY, ips=["10.0.0.2"]))
    [(meta, status)] = store.load()
    assert meta == sandbox_meta() and status.ips == ["10.0.0.2"]
    assert pb.PodSandboxConfig.FromString(meta.config) == POD_CONFIG


def test_sandbox_record_from_before_the_config_was_bytes(tmp_path: Path) -> None:
    path = tmp_path / "sandboxes.db"
    SandboxStore(path).close()
    old = asdict(sandbox_meta())
    old["config_hex"] = old.pop("config").hex()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO sandboxes VALUES (?, ?, ?)",
               ("p1", json.dumps(old), json.dumps(asdict(SandboxState(state=READY)))))
    db.commit()
    db.close()
    [(meta, status)] = SandboxStore(path).load()
    assert meta == sandbox_meta() and status.state == READY


def test_both_stores_encode_the_config_alike(tmp_path: Path) -> None:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"))
    cmeta = ContainerMeta(id="c1", pod_id="p1", name="c", attempt=0, config=cfg.SerializeToString(),
                          image_ref="busybox", image_id="sha256:a", image_repo_ref="", handler="runc",
                          bundle="/b", log_path="/l", created_at=1)
    ContainerStore(tmp_path / "containers.db").put(cmeta, ContainerState())
    SandboxStore(tmp_path / "sandboxes.db").put(sandbox_meta(), SandboxState())
    stored = [json.loads(sqlite3.connect(tmp_path / db).execute(f"SELECT meta FROM {table}").fetchone()[0])
              for db, table in (("containers.db", "containers"), ("sandboxes.db", "sandboxes"))]
    assert [s["__bytes__"] for s in stored] == [["config"], ["config"]]
    assert stored[0]["config"] == cfg.SerializeToString().hex()
    assert stored[1]["config"] == POD_CONFIG.SerializeToString().hex()
