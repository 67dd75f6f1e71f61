"""The image manager: pull, resolve, list, remove, GC, container root file systems.

Pull: manifest (index -> this platform) -> config -> layers, each layer blob
downloaded once even when several pulls want it at the same time, verified while
streaming, then unpacked into a committed snapshot keyed by chain ID. A failed
pull garbage-collects whatever it stored that no image references.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from cri_shim.config import Config
from cri_shim.containers.manager import ResolvedImage
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from cri_shim.imaging import auth, layers, reference, snapshots
from cri_shim.imaging.registry_client import RegistryClient
from cri_shim.imaging.store import ContentStore, ImageDB, ImageRecord

log = logging.getLogger("cri_shim.images")

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_platform() -> tuple[str, str, str]:
    machine = platform.machine()
    arch = GOARCH.get(machine, machine)
    variant = "v8" if arch == "arm64" else ("v7" if arch == "arm" else "")
    return "linux", arch, variant


def select_platform(index: dict[str, Any], ref: str) -> str:
    """The manifest digest for this host's platform (variant optional when absent)."""
    os_, arch, variant = host_platform()
    candidates = []
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch:
            if not p.get("variant") or not variant or p.get("variant") == variant:
                candidates.append(m)
    if not candidates:
        raise NotFound(f"image {ref}: no manifest for platform {os_}/{arch} in its index")
    return str(candidates[0]["digest"])


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


class ImageManager:
    def __init__(self, config: Config) -> None:
        self.config = config
        root = Path(config.root_dir)
        self.db = ImageDB(root / "images.db")
        self.content = ContentStore(root / "content")
        self.snap_root = root / "snapshots"
        self.ctr_root = root / "rootfs"
        self.images: dict[str, ImageRecord] = {}
        # digest -> future of an in-flight download; chain -> future of an unpack.
        self._downloads: dict[str, asyncio.Future[None]] = {}
        self._unpacks: dict[str, asyncio.Future[None]] = {}
        self._pulls = 0
        self._lock = asyncio.Lock()
        self.blob_fetches = 0  # counted for tests: blob GETs actually made

    async def start(self) -> None:
        self.snap_root.mkdir(parents=True, exist_ok=True)
        self.ctr_root.mkdir(parents=True, exist_ok=True)
        for rec in await asyncio.to_thread(self.db.images):
            self.images[rec.id] = rec
        for p in self.content.tmp.iterdir():  # leftovers of a crash mid-download
            p.unlink(missing_ok=True)
        await asyncio.to_thread(self._gc)

    async def stop(self) -> None:
        self.db.close()

    # --- lookup ---------------------------------------------------------------------

    def find(self, ref: str) -> ImageRecord | None:
        if not ref:
            raise InvalidArgument("image reference is empty")
        if ref in self.images:
            return self.images[ref]
        if reference.is_image_id(ref):
            want = ref if ref.startswith("sha256:") else "sha256:" + ref
            hits = [r for r in self.images.values() if r.id.startswith(want)]
            if len(hits) == 1:
                return hits[0]
        try:
            parsed = reference.parse(ref)
        except InvalidArgument:
            return None
        name = str(parsed)
        for r in self.images.values():
            if parsed.digest:
                if f"{parsed.repository}@{parsed.digest}" in r.repo_digests:
                    return r
            elif name in r.repo_tags:
                return r
        return None

    async def resolve(self, ref: str) -> ResolvedImage:
        rec = self.find(ref)
        if rec is None:
            raise NotFound(f"image {ref!r} not found; pull it first")
        return ResolvedImage(rec.id, rec.repo_digests[0] if rec.repo_digests else rec.id,
                             dict(rec.config.get("config") or {}))

    # --- pull -----------------------------------------------------------------------------

    async def pull(self, ref: str, creds: auth.Credentials | None = None) -> str:
        parsed = reference.parse(ref)
        cfg = self.config.images
        if creds is None or creds.empty:
            creds = auth.from_auth_file(cfg.auth_file, parsed.domain)
        client = RegistryClient(parsed, creds, cfg.insecure_registries, cfg.mirrors,
                                cfg.pull_progress_timeout)
        self._pulls += 1
        ok = False
        try:
            try:
                image_id = await asyncio.wait_for(self._pull(parsed, client), cfg.pull_deadline)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"pulling {parsed} took longer than {cfg.pull_deadline:.0f}s") from None
            ok = True
            return image_id
        finally:
            self._pulls -= 1
            await client.aclose()
            if not ok and self._pulls == 0:
                # Nothing a failed pull stored may stay unless an image references it.
                await asyncio.to_thread(self._gc)

    async def _pull(self, ref: reference.Reference, client: RegistryClient) -> str:
        media, body, digest = await client.manifest(ref.lookup)
        manifest = _json(body, f"manifest of {ref}")
        blobs = [digest]
        if media in INDEX_TYPES or "manifests" in manifest:
            self.content.write(digest, body)
            digest = select_platform(manifest, str(ref))
            media, body, digest = await client.manifest(digest)
            manifest = _json(body, f"manifest of {ref}")
            blobs.append(digest)
        self.content.write(digest, body)
        config_desc = manifest.get("config") or {}
        layer_descs = manifest.get("layers")
        if not isinstance(layer_descs, list) or "digest" not in config_desc:
            raise InvalidArgument(f"image {ref}: manifest {digest} is not an image manifest")
        total = sum(int(d.get("size", 0)) for d in layer_descs)
        progress = _Progress(str(ref), total, self.config.images.pull_progress_interval)
        await self._fetch(client, config_desc["digest"], progress)
        image_config = _json(self.content.path(config_desc["digest"]).read_bytes(), f"config of {ref}")
        diff_ids = list((image_config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layer_descs):
            raise InvalidArgument(f"image {ref}: {len(layer_descs)} layers but {len(diff_ids)} diff_ids")
        chains = chain_ids(diff_ids)
        sem = asyncio.Semaphore(max(1, self.config.images.max_concurrent_downloads))

        async def one(i: int) -> None:
            d = layer_descs[i]["digest"]
            async with sem:
                await self._fetch(client, d, progress)
            await self._unpack(d, diff_ids[i], chains[i], str(ref))

        await asyncio.gather(*(one(i) for i in range(len(layer_descs))))
        progress.done()
        blobs += [config_desc["digest"]] + [d["digest"] for d in layer_descs]
        image_id = str(config_desc["digest"])
        async with self._lock:
            rec = self.images.get(image_id) or ImageRecord(id=image_id)
            rec.config = image_config
            rec.chain = chains
            rec.blobs = sorted(set(rec.blobs) | set(blobs))
            rec.size = sum(int(d.get("size", 0)) for d in layer_descs) + len(body)
            if ref.tag and not ref.digest:
                tag = f"{ref.repository}:{ref.tag}"
                for other in self.images.values():  # a tag points at one image only
                    if other.id != image_id and tag in other.repo_tags:
                        other.repo_tags.remove(tag)
                        await asyncio.to_thread(self.db.put_image, other)
                if tag not in rec.repo_tags:
                    rec.repo_tags.append(tag)
            rd = f"{ref.repository}@{blobs[0]}"
            if rd not in rec.repo_digests:
                rec.repo_digests.append(rd)
            await asyncio.to_thread(self.db.put_image, rec)
            self.images[image_id] = rec
        log.info("pulled %s as %s", ref, image_id)
        return image_id

    async def _fetch(self, client: RegistryClient, digest: str, progress: _Progress) -> None:
        if self.content.has(digest):
            progress.add(0)
            return
        fut = self._downloads.get(digest)
        if fut is not None:
            await asyncio.shield(fut)
            return
        fut = asyncio.get_running_loop().create_future()
        self._downloads[digest] = fut
        tmp = self.content.tmp / f"{digest[7:]}.{id(fut)}"
        try:
            self.blob_fetches += 1
            await client.blob_to(digest, tmp, progress.add)
            await asyncio.to_thread(self.content.commit, tmp, digest)
            fut.set_result(None)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            fut.set_exception(e)
            fut.exception()  # mark retrieved; waiters re-raise it
            raise
        finally:
            del self._downloads[digest]

    def snapshot_dir(self, n: int) -> Path:
        return self.snap_root / str(n)

    async def _unpack(self, digest: str, diff_id: str, chain: str, ref: str) -> None:
        n = self.db.layer_number(chain)
        if n is not None and (self.snapshot_dir(n) / "fs").is_dir():
            return
        fut = self._unpacks.get(chain)
        if fut is not None:
            await asyncio.shield(fut)
            return
        fut = asyncio.get_running_loop().create_future()
        self._unpacks[chain] = fut
        try:
            n = self.db.reserve_layer(chain)
            d = self.snapshot_dir(n)
            tmp = d / "tmp"
            await asyncio.to_thread(snapshots.remove_tree, d)
            got, size = await asyncio.to_thread(
                layers.unpack, self.content.path(digest), tmp, f"{ref} {digest}")
            layers.check_diff_id(got, diff_id, f"{ref} {digest}")
            os.rename(tmp, d / "fs")
            self.db.set_layer_size(chain, size)
            fut.set_result(None)
        except BaseException as e:
            if n is not None:
                await asyncio.to_thread(snapshots.remove_tree, self.snapshot_dir(n))
                self.db.delete_layer(chain)
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            del self._unpacks[chain]

    # --- remove and GC ---------------------------------------------------------------------

    async def remove(self, ref: str) -> None:
        rec = self.find(ref)
        if rec is None:
            return  # CRI: removing a missing image succeeds
        async with self._lock:
            parsed = None
            if not reference.is_image_id(ref) and ref != rec.id:
                with contextlib.suppress(InvalidArgument):
                    parsed = reference.parse(ref)
            if parsed is not None and not parsed.digest and len(rec.repo_tags) > 1:
                # One tag of a multi-tag image: only that tag goes.
                rec.repo_tags.remove(str(parsed))
                await asyncio.to_thread(self.db.put_image, rec)
                return
            users = [c for c, img in self.db.snapshots().items() if img == rec.id]
            if users:
                raise FailedPrecondition(
                    f"image {rec.id} is in use by container(s) {', '.join(u[:12] for u in users)}")
            await asyncio.to_thread(self.db.delete_image, rec.id)
            del self.images[rec.id]
            if self._pulls == 0:
                await asyncio.to_thread(self._gc)

    def _gc(self) -> None:
        """Drop blobs and committed snapshots no image references (none while pulls run)."""
        if self._pulls:
            return
        live_blobs = {b for r in self.images.values() for b in r.blobs}
        live_chains = {c for r in self.images.values() for c in r.chain}
        for digest in self.content.all():
            if digest not in live_blobs:
                self.content.path(digest).unlink(missing_ok=True)
        for chain, n, _ in self.db.layers():
            if chain not in live_chains:
                snapshots.remove_tree(self.snapshot_dir(n))
                self.db.delete_layer(chain)
        known = {str(n) for _, n, _ in self.db.layers()}
        for d in self.snap_root.iterdir():
            if d.name not in known:
                snapshots.remove_tree(d)

    # --- container root file systems -------------------------------------------------------------

    async def prepare_rootfs(self, container_id: str, image_id: str) -> Path:
        rec = self.images.get(image_id)
        if rec is None:
            raise NotFound(f"image {image_id} not found")
        lowers = []
        for chain in reversed(rec.chain):
            n = self.db.layer_number(chain)
            if n is None:
                raise FailedPrecondition(f"image {image_id}: layer {chain} is missing; pull it again")
            lowers.append(self.snapshot_dir(n) / "fs")
        d = self.ctr_root / container_id
        self.db.put_snapshot(container_id, image_id)
        if not lowers:
            raise InvalidArgument(f"image {image_id} has no layers")
        await asyncio.to_thread(snapshots.mount_overlay, lowers, d / "upper", d / "work", d / "merged")
        return d / "merged"

    async def release_rootfs(self, container_id: str) -> None:
        d = self.ctr_root / container_id
        await asyncio.to_thread(snapshots.unmount, d / "merged")
        await asyncio.to_thread(snapshots.remove_tree, d)
        self.db.delete_snapshot(container_id)

    def rootfs_usage(self, container_id: str) -> tuple[int, int] | None:
        from cri_shim.containers.cgroup_stats import dir_usage

        upper = self.ctr_root / container_id / "upper"
        return dir_usage(str(upper)) if upper.exists() else None

    # --- CRI views ----------------------------------------------------------------------------------

    def to_pb(self, rec: ImageRecord) -> pb.Image:
        img = pb.Image(id=rec.id, repo_tags=rec.repo_tags, repo_digests=rec.repo_digests, size=rec.size,
                       spec=pb.ImageSpec(image=rec.id), pinned=rec.pinned)
        user = str((rec.config.get("config") or {}).get("User") or "")
        name = user.split(":")[0]
        if name.isdigit():
            img.uid.value = int(name)
        elif name:
            img.username = name
        else:
            img.uid.value = 0
        return img

    def fs_usage(self) -> tuple[int, int, int, int]:
        from cri_shim.containers.cgroup_stats import dir_usage

        ib, ii = dir_usage(str(self.snap_root))
        cb, ci = dir_usage(str(self.content.root))
        rb, ri = 0, 0
        for d in self.ctr_root.iterdir():
            b, i = dir_usage(str(d / "upper"))
            rb, ri = rb + b, ri + i
        return ib + cb, ii + ci, rb, ri


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise InvalidArgument(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return doc


class _Progress:
    def __init__(self, ref: str, total: int, interval: float) -> None:
        self.ref, self.total, self.interval = ref, total, interval
        self.done_bytes = 0
        self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.info("pulling %s: %d / %d bytes", self.ref, self.done_bytes, self.total)

    def done(self) -> None:
        log.info("pulling %s: %d / %d bytes, done", self.ref, self.done_bytes, self.total)
