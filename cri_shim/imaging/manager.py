"""The image manager: pull, resolve, list, remove, GC, container root file systems.

Pull: manifest (index -> this platform) -> config -> layers, each layer blob
downloaded once even when several pulls want it at the same time, at most
`images.max_concurrent_downloads` layers at a time per pull. A layer that is
neither stored nor unpacked is unpacked while it downloads, in one pass in a
worker thread (layers.StreamingUnpack): the blob goes to ingest/ and the tree to
the snapshot's tmp/; only when the blob's digest and the diff_id match and the
tree is synced is the blob committed and tmp/ renamed to fs/. A failed or
cancelled pull garbage-collects whatever it stored that no image references.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cri_shim import mounts
from cri_shim.config import Config
from cri_shim.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from cri_shim.imaging import artifacts, auth, image_volumes, layers, reference, registry_client, snapshots
from cri_shim.imaging.manifests import INDEX_TYPES, chain_ids, parse_json, select_platform
from cri_shim.imaging.pull_progress import Progress, progress_file
from cri_shim.imaging.registry_client import RegistryClient
from cri_shim.imaging.store import ContentStore, ImageDB, ImageRecord
from cri_shim.ports import ResolvedImage, UserNamespace
from cri_shim.trash import Trash

log = logging.getLogger("cri_shim.images")

def _runnable(rec: ImageRecord, ref: str) -> None:
    if rec.artifact_type:
        raise FailedPrecondition(
            f"image {ref!r} ({rec.id}) is an OCI artifact of type {rec.artifact_type}, not a runnable "
            "image: it can only be mounted as an image volume")


class ImageManager:
    def __init__(self, config: Config, *, collect_garbage: bool = True) -> None:
        self.config = config
        # Off in short-lived CLI processes: another process (the daemon) may be mid-pull,
        # with blobs stored that no image references yet.
        self.collect_garbage = collect_garbage
        root = Path(config.root_dir)
        self.db = ImageDB(root / "images.db")
        self.content = ContentStore(root / "content")
        self.snap_root = root / "snapshots"
        self.ctr_root = root / "rootfs"
        self.trash = Trash(root / "trash")  # removed rootfs trees, deleted after the call answered
        self._snapshot_usage: dict[str, tuple[int, int]] = {}  # committed snapshot dir -> (bytes, inodes)
        self.images: dict[str, ImageRecord] = {}
        # digest -> future of an in-flight download; chain -> future of an unpack. A layer
        # unpacked while it downloads is one task, in both.
        self._downloads: dict[str, asyncio.Future[None]] = {}
        self._unpacks: dict[str, asyncio.Future[None]] = {}
        self._waiters: dict[asyncio.Future[None], int] = {}  # stream task -> pulls awaiting it
        self._pulls = 0
        self._lock = asyncio.Lock()
        self.blob_fetches = 0  # counted for tests: blob GETs actually made
        # image-volume uses (record key -> image id), as stored; read at start, so releasing
        # a container without volumes costs no query
        self.volume_uses: dict[str, str] = {}

    async def start(self) -> None:
        if self.collect_garbage:  # the daemon: the first pull need not load the CA bundle
            await asyncio.to_thread(registry_client.tls_context)
        self.snap_root.mkdir(parents=True, exist_ok=True)
        self.ctr_root.mkdir(parents=True, exist_ok=True)
        for d in (self.snap_root, self.ctr_root):
            snapshots.spread_directories(d)
        for rec in await asyncio.to_thread(self.db.images):
            self.images[rec.id] = rec
        if self.collect_garbage:
            for p in self.content.tmp.iterdir():  # leftovers of a crash mid-download
                p.unlink(missing_ok=True)
        await asyncio.to_thread(self._gc)
        await self._remount_volumes()
        if self.collect_garbage:
            self.trash.empty_soon()  # what a crash left there

    async def stop(self) -> None:
        await self.trash.close()
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
        _runnable(rec, ref)
        return ResolvedImage(rec.id, rec.repo_digests[0] if rec.repo_digests else rec.id,
                             dict(rec.config.get("config") or {}))

    # --- pull -----------------------------------------------------------------------------

    async def pull(self, ref: str, creds: auth.Credentials | None = None) -> str:
        parsed = reference.parse(ref)
        cfg = self.config.images
        if creds is None or creds.empty:
            creds = auth.from_auth_file(cfg.auth_file, parsed.domain)
        client = RegistryClient(parsed, creds, cfg.insecure_registries, cfg.mirrors,
                                cfg.pull_progress_timeout, cfg.servers)
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
                await self._gc_quietly()

    async def _pull(self, ref: reference.Reference, client: RegistryClient) -> str:
        media, body, digest = await client.manifest(ref.lookup)
        manifest = parse_json(body, f"manifest of {ref}")
        blobs = [digest]
        if media in INDEX_TYPES or "manifests" in manifest:
            await asyncio.to_thread(self.content.write, digest, body)
            digest = select_platform(manifest, str(ref))
            media, body, digest = await client.manifest(digest)
            manifest = parse_json(body, f"manifest of {ref}")
            blobs.append(digest)
        config_desc = manifest.get("config") or {}
        layer_descs = manifest.get("layers")
        if not isinstance(layer_descs, list) or not isinstance(config_desc, dict) \
                or "digest" not in config_desc:
            raise InvalidArgument(f"image {ref}: manifest {digest} is not an image manifest")
        kind = artifacts.artifact_type(manifest)
        if kind:
            # Checked before anything is stored: a bad title leaves nothing behind.
            plan = artifacts.plan(manifest, f"artifact {ref}")
            await asyncio.to_thread(self.content.write, digest, body)
            return await self._pull_artifact(ref, client, kind, plan, config_desc, digest, blobs, len(body))
        await asyncio.to_thread(self.content.write, digest, body)
        total = sum(int(d.get("size", 0)) for d in layer_descs)
        progress = Progress(str(ref), total, self.config.images.pull_progress_interval,
                            progress_file(self.config.state_dir, str(ref)))
        await self._fetch(client, config_desc["digest"], progress)
        image_config = parse_json(self.content.path(config_desc["digest"]).read_bytes(), f"config of {ref}")
        diff_ids = list((image_config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layer_descs):
            raise InvalidArgument(f"image {ref}: {len(layer_descs)} layers but {len(diff_ids)} diff_ids")
        chains = chain_ids(diff_ids)
        sem = asyncio.Semaphore(max(1, self.config.images.max_concurrent_downloads))

        async def one(i: int) -> None:
            d = layer_descs[i]["digest"]
            await self._layer(client, d, diff_ids[i], chains[i], str(ref), progress, sem)

        await _settle([one(i) for i in range(len(layer_descs))])
        progress.done()
        blobs += [config_desc["digest"]] + [d["digest"] for d in layer_descs]
        image_id = str(config_desc["digest"])

        def fill(rec: ImageRecord) -> None:
            rec.config = image_config
            rec.chain = chains
            rec.blobs = sorted(set(rec.blobs) | set(blobs))
            rec.size = sum(int(d.get("size", 0)) for d in layer_descs) + len(body)

        await self._record(ref, image_id, blobs[0], fill)
        log.info("pulled %s as %s", ref, image_id)
        return image_id

    async def _record(self, ref: reference.Reference, image_id: str, manifest_digest: str,
                      fill: Callable[[ImageRecord], None]) -> None:
        """Record a pulled image (new, or the one it already was): `fill` sets what the pull
        learnt, then the tag moves to it and its repo digest is added, and it is stored."""
        async with self._lock:
            rec = self.images.get(image_id) or ImageRecord(id=image_id)
            fill(rec)
            if ref.tag and not ref.digest:
                await self._move_tag(rec, f"{ref.repository}:{ref.tag}")
            rd = f"{ref.repository}@{manifest_digest}"
            if rd not in rec.repo_digests:
                rec.repo_digests.append(rd)
            await asyncio.to_thread(self.db.put_image, rec)
            self.images[image_id] = rec

    async def _pull_artifact(self, ref: reference.Reference, client: RegistryClient, kind: str,
                             plan: list[artifacts.ArtifactLayer], config_desc: dict[str, Any],
                             manifest_digest: str, blobs: list[str], manifest_size: int) -> str:
        """An OCI artifact: its blobs stored (digest-verified), its files materialised as one
        snapshot (see imaging.artifacts), recorded under the manifest digest."""
        progress = Progress(str(ref), sum(layer.size for layer in plan),
                            self.config.images.pull_progress_interval,
                            progress_file(self.config.state_dir, str(ref)))
        sem = asyncio.Semaphore(max(1, self.config.images.max_concurrent_downloads))

        async def one(digest: str) -> None:
            async with sem:
                await self._fetch(client, digest, progress)

        digests = [str(config_desc["digest"])] + [layer.digest for layer in plan]
        await _settle([one(d) for d in dict.fromkeys(digests)])
        chain = f"artifact:{manifest_digest}"
        await self._materialise(chain, plan, str(ref))
        progress.done()
        image_id = manifest_digest

        def fill(rec: ImageRecord) -> None:
            rec.config, rec.chain, rec.artifact_type = {}, [chain], kind
            rec.blobs = sorted(set(rec.blobs) | set(blobs) | set(digests))
            rec.size = sum(layer.size for layer in plan) + int(config_desc.get("size") or 0) + manifest_size

        await self._record(ref, image_id, blobs[0], fill)
        log.info("pulled %s as %s (an OCI artifact of type %s)", ref, image_id, kind)
        return image_id

    async def _materialise(self, chain: str, plan: list[artifacts.ArtifactLayer], ref: str) -> None:
        """The artifact's snapshot committed, built once even when several pulls want it."""
        n = await asyncio.to_thread(self.db.layer_number, chain)
        if n is not None and (self.snapshot_dir(n) / "fs").is_dir():
            return
        task = self._unpacks.get(chain)
        if task is None:
            # A task of its own, as _unpack: a cancelled pull does not remove its directory
            # while its thread still writes there.
            task = asyncio.ensure_future(self._materialise_task(chain, plan, ref))
            self._unpacks[chain] = task
            task.add_done_callback(lambda t: self._unpack_done(chain, t))
        await asyncio.shield(task)

    async def _materialise_task(self, chain: str, plan: list[artifacts.ArtifactLayer], ref: str) -> None:
        n = None
        try:
            n = await asyncio.to_thread(self.db.reserve_layer, chain)  # the record first
            d = self.snapshot_dir(n)
            await asyncio.to_thread(snapshots.remove_tree, d)
            size = await asyncio.to_thread(artifacts.materialise, plan, self.content.path, d / "tmp",
                                           f"artifact {ref}")
            await asyncio.to_thread(snapshots.commit, d / "tmp", d / "fs")
            await asyncio.to_thread(self.db.set_layer_size, chain, size)
        except BaseException:
            if n is not None:
                await asyncio.to_thread(snapshots.remove_tree, self.snapshot_dir(n))
                await asyncio.to_thread(self.db.delete_layer, chain)
            raise

    async def _layer(self, client: RegistryClient, digest: str, diff_id: str, chain: str, ref: str,
                     progress: Progress, sem: asyncio.Semaphore) -> None:
        """Make the layer's blob stored and its snapshot committed."""
        while True:
            try:
                n = await asyncio.to_thread(self.db.layer_number, chain)
                unpacked = n is not None and (self.snapshot_dir(n) / "fs").is_dir()
                if (unpacked or digest in self._downloads or chain in self._unpacks
                        or self.content.has(digest)):
                    # Half there, or under way in another pull: fetch (or wait), then unpack.
                    async with sem:
                        await self._fetch(client, digest, progress)
                    await self._unpack(digest, diff_id, chain, ref)
                    return
                async with sem:
                    if digest in self._downloads or chain in self._unpacks or self.content.has(digest):
                        continue  # another pull started it while this one waited for a slot
                    task = asyncio.ensure_future(
                        self._stream_layer(client, digest, diff_id, chain, ref, progress))
                    self._downloads[digest] = self._unpacks[chain] = task
                    await self._wait_job(task)
                    return
            except asyncio.CancelledError:
                task_self = asyncio.current_task()
                if task_self is not None and task_self.cancelling():
                    raise
                # The pull this one waited for was cancelled, not this one: try again.

    async def _wait_job(self, task: asyncio.Future[None]) -> None:
        """Await a streaming layer; the last pull to stop waiting for it cancels it, and
        waits until it has removed what it wrote."""
        self._waiters[task] = self._waiters.get(task, 0) + 1
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done() and self._waiters[task] == 1:
                task.cancel()
                await asyncio.wait({task})
            raise
        finally:
            self._waiters[task] -= 1
            if not self._waiters[task]:
                del self._waiters[task]

    async def _stream_layer(self, client: RegistryClient, digest: str, diff_id: str, chain: str, ref: str,
                            progress: Progress) -> None:
        """Download a layer and unpack it on the way (the task registered for both)."""
        me = asyncio.current_task()
        tmp = self.content.tmp / f"{digest[7:]}.{id(me)}"
        what = f"{ref} {digest}"
        n: int | None = None
        sink: layers.StreamingUnpack | None = None
        try:
            self.blob_fetches += 1
            n = await asyncio.to_thread(self.db.reserve_layer, chain)
            d = self.snapshot_dir(n)
            await asyncio.to_thread(snapshots.remove_tree, d)
            sink = layers.StreamingUnpack(tmp, d / "tmp", what)
            sink.start()
            await client.blob_into(digest, sink.feed, progress.add)
            got, got_diff_id, size, error = await sink.finish()
            if got != digest:
                raise client.digest_mismatch(digest, got)
            if error is not None:
                raise error
            layers.check_diff_id(got_diff_id, diff_id, what)
            await asyncio.to_thread(self.content.commit, tmp, digest)
            await asyncio.to_thread(snapshots.commit, d / "tmp", d / "fs")
            await asyncio.to_thread(self.db.set_layer_size, chain, size)
        except BaseException:
            if sink is not None:
                await sink.abort()  # the thread lets go of the files before they go
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            if n is not None:
                await asyncio.to_thread(snapshots.remove_tree, self.snapshot_dir(n))
                await asyncio.to_thread(self.db.delete_layer, chain)
            raise
        finally:
            self._downloads.pop(digest, None)
            self._unpacks.pop(chain, None)

    async def _fetch(self, client: RegistryClient, digest: str, progress: Progress) -> None:
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
        n = await asyncio.to_thread(self.db.layer_number, chain)
        if n is not None and (self.snapshot_dir(n) / "fs").is_dir():
            return
        task = self._unpacks.get(chain)
        if task is None:
            # The unpack is a task of its own, not part of the caller's: a cancelled pull
            # (deadline) leaves it to finish or clean up after itself, instead of removing
            # its directory while its thread is still writing there.
            task = asyncio.ensure_future(self._unpack_layer(digest, diff_id, chain, ref))
            self._unpacks[chain] = task
            task.add_done_callback(lambda t: self._unpack_done(chain, t))
        await asyncio.shield(task)

    def _unpack_done(self, chain: str, task: asyncio.Task[None]) -> None:
        self._unpacks.pop(chain, None)
        if not task.cancelled():
            task.exception()  # retrieved here: its waiters, if any, re-raise it

    async def _unpack_layer(self, digest: str, diff_id: str, chain: str, ref: str) -> None:
        n = None
        try:
            n = await asyncio.to_thread(self.db.reserve_layer, chain)
            d = self.snapshot_dir(n)
            tmp = d / "tmp"
            await asyncio.to_thread(snapshots.remove_tree, d)
            got, size = await asyncio.to_thread(
                layers.unpack, self.content.path(digest), tmp, f"{ref} {digest}")
            layers.check_diff_id(got, diff_id, f"{ref} {digest}")
            await asyncio.to_thread(layers.sync_tree, tmp)
            await asyncio.to_thread(snapshots.commit, tmp, d / "fs")
            await asyncio.to_thread(self.db.set_layer_size, chain, size)
        except BaseException:
            if n is not None:
                await asyncio.to_thread(snapshots.remove_tree, self.snapshot_dir(n))
                await asyncio.to_thread(self.db.delete_layer, chain)
            raise

    # --- offline import ------------------------------------------------------------------

    async def import_archive(self, path: Path, default_repo: str = "") -> list[str]:
        """Load every image of an OCI layout (dir or tar) or docker-save tar; return their ids."""
        from cri_shim.imaging.archive_import import read_archive

        found, tmp = await asyncio.to_thread(read_archive, path, default_repo)
        self._pulls += 1
        ok = False
        try:
            ids = [await self._import_one(img, str(path)) for img in found]
            ok = True
            return ids
        finally:
            self._pulls -= 1
            if tmp is not None:
                await asyncio.to_thread(snapshots.remove_tree, tmp)
            if not ok and self._pulls == 0:
                await self._gc_quietly()

    async def _import_one(self, img: Any, source: str) -> str:
        import shutil

        for digest, p in img.blobs.items():
            if not self.content.has(digest):
                tmp = self.content.tmp / f"{digest[7:]}.import"
                await asyncio.to_thread(shutil.copyfile, p, tmp)
                await asyncio.to_thread(self.content.commit, tmp, digest)
        image_config = parse_json(self.content.path(img.config_digest).read_bytes(), f"config in {source}")
        diff_ids = list((image_config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(img.layer_digests):
            raise InvalidArgument(f"{source}: {len(img.layer_digests)} layers but {len(diff_ids)} diff_ids")
        chains = chain_ids(diff_ids)
        for d, diff, chain in zip(img.layer_digests, diff_ids, chains, strict=True):
            await self._unpack(d, diff, chain, source)
        async with self._lock:
            rec = self.images.get(img.config_digest) or ImageRecord(id=img.config_digest)
            rec.config, rec.chain = image_config, chains
            rec.blobs = sorted(set(rec.blobs) | set(img.blobs))
            rec.size = sum(p.stat().st_size for p in img.blobs.values())
            for name in img.names:
                await self._move_tag(rec, name)
                if img.manifest_digest:
                    rd = f"{reference.parse(name).repository}@{img.manifest_digest}"
                    if rd not in rec.repo_digests:
                        rec.repo_digests.append(rd)
            await asyncio.to_thread(self.db.put_image, rec)
            self.images[rec.id] = rec
        log.info("imported %s from %s as %s", ", ".join(img.names) or "an untagged image", source, rec.id)
        return rec.id

    async def _move_tag(self, rec: ImageRecord, tag: str) -> None:
        """Give rec the tag, taking it from any other image: a tag points at one image only.
        Called under self._lock; rec itself is written by the caller."""
        for other in self.images.values():
            if other.id != rec.id and tag in other.repo_tags:
                other.repo_tags.remove(tag)
                await asyncio.to_thread(self.db.put_image, other)
        if tag not in rec.repo_tags:
            rec.repo_tags.append(tag)

    async def reload(self) -> None:
        """Re-read the image index (after `cri-shim images import` wrote to the store)."""
        records = await asyncio.to_thread(self.db.images)
        self.images = {r.id: r for r in records}

    # --- remove and GC ---------------------------------------------------------------------

    async def remove(self, ref: str) -> None:
        async with self._lock:
            # Looked up under the lock: a concurrent RemoveImage of the same image may have
            # removed it (or its tag) while this call waited.
            rec = self.find(ref)
            if rec is None:
                return  # CRI: removing a missing image succeeds
            parsed = None
            if not reference.is_image_id(ref) and ref != rec.id:
                with contextlib.suppress(InvalidArgument):
                    parsed = reference.parse(ref)
            if parsed is not None and not parsed.digest and len(rec.repo_tags) > 1:
                # One tag of a multi-tag image: only that tag goes.
                rec.repo_tags.remove(str(parsed))
                await asyncio.to_thread(self.db.put_image, rec)
                return
            snaps = await asyncio.to_thread(self.db.snapshots)
            users = [c for c, img in snaps.items() if img == rec.id]
            if users:
                named = sorted({u.split(image_volumes.USE_MARK)[0][:12]
                                + (" (image volume)" if image_volumes.is_volume_use(u) else "")
                                for u in users})
                raise FailedPrecondition(f"image {rec.id} is in use by container(s) {', '.join(named)}")
            await asyncio.to_thread(self.db.delete_image, rec.id)
            self.images.pop(rec.id, None)
            if self._pulls == 0:
                await asyncio.to_thread(self._gc)

    async def _gc_quietly(self) -> None:
        """GC after a failure: its own error is logged, never put in place of the failure's."""
        try:
            await asyncio.to_thread(self._gc)
        except OSError as e:
            log.warning("garbage collection after a failed pull: %s", e)

    def _gc(self) -> None:
        """Drop blobs and committed snapshots no image references (none while pulls or unpacks run)."""
        if self._pulls or self._unpacks or not self.collect_garbage:
            return
        live_blobs = {b for r in self.images.values() for b in r.blobs}
        live_chains = {c for r in self.images.values() for c in r.chain}
        for digest in self.content.all():
            if digest not in live_blobs:
                self.content.path(digest).unlink(missing_ok=True)
        for chain, n, _ in self.db.layers():
            if chain not in live_chains:
                snapshots.remove_tree(self.snapshot_dir(n))
                self.db.delete_layer(chain, durable=False)  # its tree is gone: a row of nothing
        known = {str(n) for _, n, _ in self.db.layers()}
        for d in self.snap_root.iterdir():
            if d.name not in known:
                snapshots.remove_tree(d)

    # --- container root file systems -------------------------------------------------------------

    async def _lowers(self, rec: ImageRecord) -> list[Path]:
        """The image's committed layers, top first (overlay's lowerdir order)."""
        numbers = dict((c, n) for c, n, _ in await asyncio.to_thread(self.db.layers))
        lowers = []
        for chain in reversed(rec.chain):
            n = numbers.get(chain)
            if n is None:
                raise FailedPrecondition(f"image {rec.id}: layer {chain} is missing; pull it again")
            lowers.append(self.snapshot_dir(n) / "fs")
        return lowers

    async def prepare_rootfs(self, container_id: str, image_id: str,
                             userns: UserNamespace | None = None) -> Path:
        rec = self.images.get(image_id)
        if rec is None:
            raise NotFound(f"image {image_id} not found")
        _runnable(rec, image_id)
        lowers = await self._lowers(rec)
        d = self.ctr_root / container_id
        await asyncio.to_thread(self.db.put_snapshot, container_id, image_id)
        if not lowers:
            raise InvalidArgument(f"image {image_id} has no layers")
        if self.config.images.snapshotter == "native":
            await asyncio.to_thread(snapshots.copy_layers, lowers, d / "upper")
            if userns is None:
                return d / "upper"
            # the copy keeps the image's ids; the container sees it through an idmapped bind
            await asyncio.to_thread((d / "merged").mkdir, exist_ok=True)
            await asyncio.to_thread(mounts.idmapped_bind, d / "upper", d / "merged", userns.path)
            return d / "merged"
        if userns is not None:
            await asyncio.to_thread(snapshots.mount_overlay_idmapped, lowers, d / "upper", d / "work",
                                    d / "merged", d / "l", userns.path, userns.root_ids)
        else:
            await asyncio.to_thread(snapshots.mount_overlay, lowers, d / "upper", d / "work", d / "merged")
        return d / "merged"

    async def release_rootfs(self, container_id: str) -> None:
        def release() -> None:  # one thread hop for the tree and its row (the row goes unsynced)
            snapshots.remove_container_rootfs(self.ctr_root / container_id, self.trash.remove)
            self.db.delete_snapshot(container_id, False)

        await asyncio.to_thread(release)
        self.trash.empty_soon()

    async def forget_containers_except(self, live: set[str]) -> None:
        """At start, once the containers are known: release what containers removed before a
        crash may have left recorded (their rows go without an fsync), rootfs and image-volume
        uses alike, so no image stays in use by a container that no longer exists."""
        gone = {key.split("/", 1)[0] for key in await asyncio.to_thread(self.db.snapshots)} - live
        for cid in sorted(gone):
            log.info("container %s: releasing what its removal left recorded", cid)
            await self.release_rootfs(cid)
            await self.release_volumes(cid)

    # --- image volumes ---------------------------------------------------------------------------

    def _volume_dir(self, image_id: str) -> Path:
        return Path(self.config.root_dir) / "image-volumes" / image_id.removeprefix("sha256:")

    async def mount_volume(self, container_id: str, index: int, ref: str, sub: str = "") -> Path:
        """The image `ref` mounted read-only (shared per image) for a container's volume
        `index`; the path inside it for `sub`. The image counts as in use until
        release_volumes(container_id)."""
        rec = self.find(ref)
        if rec is None:
            raise NotFound(f"image {ref!r} of an image volume is not present (pull it first)")
        lowers = await self._lowers(rec)
        if not lowers:
            raise InvalidArgument(f"image {ref!r} of an image volume has no layers")
        key = image_volumes.use_key(container_id, index)
        await asyncio.to_thread(self.db.put_snapshot, key, rec.id)
        self.volume_uses[key] = rec.id
        target = self._volume_dir(rec.id)
        try:
            async with self._lock:
                await asyncio.to_thread(image_volumes.mount_image, lowers, target)
            return await asyncio.to_thread(image_volumes.sub_path, target, sub, ref)
        except BaseException:
            await self.release_volumes(container_id)
            raise

    async def release_volumes(self, container_id: str) -> None:
        """End a container's uses of image volumes; unmount the images no one else uses."""
        if not any(image_volumes.is_use_of(k, container_id) for k in self.volume_uses):
            return
        async with self._lock:
            mine = {k: img for k, img in self.volume_uses.items() if image_volumes.is_use_of(k, container_id)}
            for key in mine:
                await asyncio.to_thread(self.db.delete_snapshot, key)
                self.volume_uses.pop(key, None)
            for image_id in set(mine.values()) - self.volume_images:
                await asyncio.to_thread(image_volumes.unmount_image, self._volume_dir(image_id))

    @property
    def volume_images(self) -> set[str]:
        """Images mounted as image volumes: reported pinned, so the kubelet's GC leaves them."""
        return set(self.volume_uses.values())

    async def _remount_volumes(self) -> None:
        """At start: the mounts of recorded uses (gone after a reboot with the state kept)."""
        uses = await asyncio.to_thread(self.db.snapshots)
        self.volume_uses = {k: img for k, img in uses.items() if image_volumes.is_volume_use(k)}
        for image_id in self.volume_images:
            rec = self.images.get(image_id)
            if rec is not None:
                try:
                    await asyncio.to_thread(image_volumes.mount_image, await self._lowers(rec),
                                            self._volume_dir(image_id))
                except (FailedPrecondition, Internal, OSError) as e:
                    log.warning("image volume of %s not mounted again: %s", image_id, e)

    def rootfs_usage(self, container_id: str) -> tuple[int, int] | None:
        from cri_shim.stats.cgroups import dir_usage

        upper = self.ctr_root / container_id / "upper"
        return dir_usage(str(upper)) if upper.exists() else None

    # --- disk usage ---------------------------------------------------------------------------------

    async def fs_usage(self) -> tuple[int, int, int, int]:
        """(image bytes, image inodes, container bytes, container inodes) for ImageFsInfo, off the
        event loop: it walks file trees, and the kubelet asks every few seconds."""
        return await asyncio.to_thread(self._fs_usage)

    def _fs_usage(self) -> tuple[int, int, int, int]:
        from cri_shim.stats.cgroups import dir_usage

        # A committed snapshot never changes: each is walked once (a 20,000-file layer is
        # a 100 ms walk); one being unpacked (tmp/ still there) is walked every time.
        ib, ii = dir_usage(str(self.snap_root), recurse=False)
        seen = set()
        for d in self.snap_root.iterdir():
            seen.add(d.name)
            got = self._snapshot_usage.get(d.name)
            if got is None:
                got = dir_usage(str(d))
                if (d / "fs").is_dir() and not (d / "tmp").exists():
                    self._snapshot_usage[d.name] = got
            ib, ii = ib + got[0], ii + got[1]
        for name in set(self._snapshot_usage) - seen:
            self._snapshot_usage.pop(name, None)
        cb, ci = dir_usage(str(self.content.root))
        rb, ri = 0, 0
        for d in self.ctr_root.iterdir():
            b, i = dir_usage(str(d / "upper"))
            rb, ri = rb + b, ri + i
        return ib + cb, ii + ci, rb, ri


async def _settle(aws: list[Awaitable[None]]) -> None:
    """Await all; then raise the first failure (a real error before a cancellation). Every
    layer settles before a pull reports: a failed one must not let the pull's clean-up run
    while a sibling still unpacks into the snapshot tree."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise next((e for e in errors if not isinstance(e, asyncio.CancelledError)), errors[0])
