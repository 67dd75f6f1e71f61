"""Pulls under load: the per-pull limit on concurrent layer downloads, pulls of different
images side by side, and a pull cancelled halfway (nothing of it may stay behind)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from cri_shim.config import Config
from cri_shim.criapi import api_pb2 as pb
from cri_shim.imaging.manager import ImageManager
from cri_shim.imaging.registry_client import RegistryClient
from tests.e2e.daemon import DaemonProcess
from tests.support import testimages
from tests.support.registry import Registry, free_port, start_registry

pytestmark = pytest.mark.root


def small_layers(tag: str, n: int) -> list[testimages.Layer]:
    return [testimages.Layer(testimages.TarBuilder().dir(f"{tag}{i}")
                             .file(f"{tag}{i}/data", os.urandom(4096)).bytes()) for i in range(n)]


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    r = start_registry(tmp_path_factory.mktemp("limits-registry"))
    try:
        p = testimages.Pusher(r.host)
        p.image("limits/five", "latest", small_layers("five", 5))
        p.image("limits/one", "latest", small_layers("one", 1))
        yield r
    finally:
        r.stop()


class Downloads:
    """Wraps RegistryClient.blob_into: counts downloads in flight (each made to last a while)
    and when each pull finishes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
        self.active = self.peak = 0
        orig = RegistryClient.blob_into

        async def blob_into(client: RegistryClient, digest: str, feed: Callable[[bytes], Awaitable[None]],
                            progress: Callable[[int], None]) -> int:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await asyncio.sleep(delay)
                return await orig(client, digest, feed, progress)
            finally:
                self.active -= 1

        monkeypatch.setattr(RegistryClient, "blob_into", blob_into)


def manager(tmp_path: Path, limit: int | None) -> ImageManager:
    cfg = Config(root_dir=str(tmp_path / "root"), state_dir=str(tmp_path / "state"))
    if limit is not None:
        cfg.images.max_concurrent_downloads = limit
    return ImageManager(cfg)


@pytest.mark.parametrize("limit", [1, 2, None])
def test_concurrent_layer_downloads_are_limited_per_pull(
        reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None) -> None:
    dl = Downloads(monkeypatch, 0.2)
    m = manager(tmp_path, limit)

    async def go() -> None:
        await m.start()
        try:
            await m.pull(reg.image("limits/five:latest"))
        finally:
            await m.stop()

    asyncio.run(go())
    assert dl.peak == (limit or 3)  # containerd's default is 3 too
    assert m.blob_fetches == 6  # the config and five layers


def test_pulls_of_different_images_do_not_wait_for_each_other(reg: Registry, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With one download at a time per pull, a one-layer image pulled while a five-layer one
    is under way finishes in about one layer's time, not after the other's five."""
    Downloads(monkeypatch, 0.3)
    m = manager(tmp_path, 1)
    done: dict[str, float] = {}

    async def one(name: str) -> None:
        await m.pull(reg.image(f"limits/{name}:latest"))
        done[name] = time.monotonic()

    async def go() -> None:
        await m.start()
        try:
            await asyncio.gather(one("five"), one("one"))
        finally:
            await m.stop()

    t0 = time.monotonic()
    asyncio.run(go())
    assert done["one"] - t0 < 1.2 < done["five"] - t0, done
    assert done["one"] < done["five"]


class SlowProxy:
    """A TCP proxy to the registry sending its answers at about `rate` bytes a second."""

    def __init__(self, target: str, rate: int) -> None:
        self.target, self.rate = target, rate
        self.port = free_port()
        self.srv = socket.create_server(("127.0.0.1", self.port))
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            host, port = self.target.split(":")
            u = socket.create_connection((host, int(port)))
            threading.Thread(target=self._pump, args=(c, u, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, self.rate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped = True
        self.srv.close()


def leftovers(d: DaemonProcess) -> list[str]:
    """Everything of a pull in the store: blobs, ingest files, snapshots (committed or
    half-written), layer rows."""
    root = d.root_dir
    found = [f"blob {p.name}" for p in (root / "content" / "blobs" / "sha256").iterdir()]
    found += [f"ingest {p.name}" for p in (root / "content" / "ingest").iterdir()]
    found += [f"snapshot {p.name}: {sorted(os.listdir(p))}" for p in (root / "snapshots").iterdir()]
    db = sqlite3.connect(root / "images.db")
    try:
        found += [f"layer row {c[:19]} -> {n}" for c, n in db.execute("SELECT chain, n FROM layers")]
    finally:
        db.close()
    return found


def test_pull_cancelled_halfway_leaves_nothing_behind(daemon_factory: Callable[..., DaemonProcess],
                                                      tmp_path: Path) -> None:
    r = start_registry(tmp_path / "reg")
    proxy = SlowProxy(r.host, 4 << 20)
    try:
        layers = [testimages.Layer(testimages.TarBuilder().dir(f"l{i}")
                                   .file(f"l{i}/blob", os.urandom(3 << 20)).bytes(), level=1)
                  for i in range(3)]
        testimages.Pusher(r.host).image("limits/big", "latest", layers)
        d = daemon_factory()
        ref = f"{proxy.host}/limits/big:latest"
        call = d.images.PullImage.future(pb.PullImageRequest(image=pb.ImageSpec(image=ref)))
        ingest, snaps = d.root_dir / "content" / "ingest", d.root_dir / "snapshots"
        deadline = time.monotonic() + 20
        # Halfway: layers are arriving and being unpacked.
        while not (any(p.stat().st_size > (1 << 20) for p in ingest.iterdir())
                   and any((p / "tmp").exists() for p in snaps.iterdir())):
            assert time.monotonic() < deadline and not call.done(), "the pull never got under way"
            time.sleep(0.02)
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
        deadline = time.monotonic() + 10
        while (left := leftovers(d)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == []
        assert d.images.ListImages(pb.ListImagesRequest()).images == []
        # And the next pull of the same image works.
        image_id = d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref))).image_ref
        assert image_id.startswith("sha256:")
        d.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
        assert leftovers(d) == []
    finally:
        proxy.stop()
        r.stop()
