"""Image metadata in sqlite, and the content store of blobs by digest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri_shim import atomic_file
from cri_shim.sqlite_store import SqliteStore


@dataclass
class ImageRecord:
    id: str  # config digest
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # the whole image config document
    chain: list[str] = field(default_factory=list)  # chain IDs, bottom layer first
    blobs: list[str] = field(default_factory=list)  # manifest(s), config, layer digests
    pinned: bool = False
    # An OCI artifact (not runnable; only mounted as an image volume): its artifact type. Its
    # id is then the manifest digest (an empty config is the same blob for every artifact),
    # config is {} and chain is the one snapshot of its materialised files.
    artifact_type: str = ""


class ImageDB(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, [
            "CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS layers (chain TEXT PRIMARY KEY, n INTEGER UNIQUE, size INTEGER)",
            "CREATE TABLE IF NOT EXISTS snapshots (container TEXT PRIMARY KEY, image TEXT)",
        ])

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.execute(sql, args)

    def _delete(self, sql: str, args: tuple[Any, ...], durable: bool) -> None:
        """A row's deletion; durable=False (execute_unsynced) only for a row whose objects
        are gone already, which a crash can bring back as a row of nothing."""
        if durable:
            self._q(sql, args)
        else:
            self.execute_unsynced(sql, args)

    def put_image(self, rec: ImageRecord) -> None:
        self._q("INSERT OR REPLACE INTO images VALUES (?, ?)", (rec.id, json.dumps(rec.__dict__)))

    def delete_image(self, image_id: str) -> None:
        self._q("DELETE FROM images WHERE id = ?", (image_id,))

    def images(self) -> list[ImageRecord]:
        return [ImageRecord(**json.loads(doc)) for (doc,) in self._q("SELECT doc FROM images")]

    def layer_number(self, chain: str) -> int | None:
        rows = self._q("SELECT n FROM layers WHERE chain = ?", (chain,))
        return rows[0][0] if rows else None

    def reserve_layer(self, chain: str) -> int:
        """The snapshot number of chain, allocating the next free one in one statement."""
        self._q("INSERT OR IGNORE INTO layers SELECT ?, COALESCE(MAX(n), 0) + 1, NULL FROM layers", (chain,))
        return int(self._q("SELECT n FROM layers WHERE chain = ?", (chain,))[0][0])

    def set_layer_size(self, chain: str, size: int) -> None:
        self._q("UPDATE layers SET size = ? WHERE chain = ?", (size, chain))

    def layers(self) -> list[tuple[str, int, int | None]]:
        return [(c, n, s) for c, n, s in self._q("SELECT chain, n, size FROM layers")]

    def delete_layer(self, chain: str, durable: bool = True) -> None:
        """durable=False: after its snapshot tree is gone (garbage collection); a crash can
        only bring back a row of nothing, which the start-up collection drops again before
        any pull could take it for a committed layer."""
        self._delete("DELETE FROM layers WHERE chain = ?", (chain,), durable)

    def put_snapshot(self, container: str, image: str) -> None:
        self._q("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (container, image))

    def delete_snapshot(self, container: str, durable: bool = True) -> None:
        """durable=False: the last step of a teardown, whose rootfs is gone already (the next
        write syncs it; a crash can only bring the row back, and start-up drops it again:
        ImageManager.forget_containers_except)."""
        self._delete("DELETE FROM snapshots WHERE container = ?", (container,), durable)

    def snapshots(self) -> dict[str, str]:
        return dict(self._q("SELECT container, image FROM snapshots"))


class ContentStore:
    """Blobs at <root>/blobs/sha256/<hex>, written through temp files and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "ingest"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise ValueError(f"unsupported digest {digest!r}")
        return self.blobs / hexd

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def commit(self, tmp: Path, digest: str) -> None:
        """Move a finished download or copy from ingest/ into place (fsynced, then renamed)."""
        atomic_file.commit(tmp, self.path(digest))

    def write(self, digest: str, data: bytes) -> None:
        atomic_file.write_atomic(self.path(digest), data, atomic_file.SHARED_FILE, tmp_dir=self.tmp)

    def all(self) -> list[str]:
        return ["sha256:" + p.name for p in self.blobs.iterdir()]
