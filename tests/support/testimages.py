#!/usr/bin/env python3
"""Build busybox-based test images and push them to a registry over its HTTP API.

    .venv/bin/python -m tests.support.testimages --registry 127.0.0.1:5000 [--user U --password P]

Images (all from this host's /bin/busybox, nothing downloaded):
  busybox:latest        two layers: busybox + applets, then /etc files and a whiteout
  busybox:nonroot       USER app (uid 1000) added in a third layer
  busybox:multiarch     an OCI index with this host's platform and a fake other one
  hostile/dotdot        a layer with a ../ path
  hostile/symlink       a symlink to /tmp, then a file written through it
  hostile/hardlink      a hardlink to /etc/shadow
  hostile/truncated     a gzip layer cut short
The tests import this module; its functions return the pushed manifest digests.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

APPLETS = ["sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "ip", "wget", "httpd", "head", "tail",
           "mkdir", "hostname", "env", "ps", "nc", "dd", "grep", "touch", "rm", "sync", "kill", "date",
           "mount", "umount"]
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"


@dataclass
class ArtifactFile:
    """One layer of an OCI artifact: a blob of any media type, named by its title annotation
    (no title: no annotation at all)."""
    data: bytes
    title: str | None = None
    media_type: str = "application/octet-stream"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TarBuilder:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = kind, mode, 1_700_000_000, 0, 0
        return ti

    def dir(self, name: str, mode: int = 0o755) -> TarBuilder:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))
        return self

    def file(self, name: str, data: bytes, mode: int = 0o644) -> TarBuilder:
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))
        return self

    def symlink(self, name: str, target: str) -> TarBuilder:
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def hardlink(self, name: str, target: str) -> TarBuilder:
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


@dataclass
class Layer:
    tar: bytes  # uncompressed
    gz: bool = True
    level: int = 9  # gzip level; benchmarks use 1 to build big images quickly
    zstd: bool = False  # zstd instead of gzip (level 3, as containerd and buildkit write)
    _blob: bytes | None = None

    @property
    def blob(self) -> bytes:
        if self._blob is None:
            if self.zstd:
                import zstandard

                self._blob = zstandard.ZstdCompressor(level=3).compress(self.tar)
            elif self.gz:
                self._blob = gzip.compress(self.tar, compresslevel=self.level, mtime=0)
            else:
                self._blob = self.tar
        return self._blob

    @property
    def media_type(self) -> str:
        return OCI_LAYER_ZSTD if self.zstd else OCI_LAYER_GZ if self.gz else OCI_LAYER

    @property
    def diff_id(self) -> str:
        return sha(self.tar)


def is_static_elf(binary: bytes) -> bool:
    """True when a 64-bit little-endian ELF has no program interpreter (PT_INTERP)."""
    import struct

    if binary[:4] != b"\x7fELF" or binary[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", binary, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", binary, 0x36)
    return all(struct.unpack_from("<I", binary, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def busybox_base() -> Layer:
    t = TarBuilder()
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "www", "root", "home"):
        t.dir(d, 0o1777 if d == "tmp" else 0o755)
    with open("/bin/busybox", "rb") as f:
        binary = f.read()
    if not is_static_elf(binary):
        raise SystemExit("testimages: /bin/busybox is dynamically linked (Debian's busybox package "
                         "replaced busybox-static?); the test images need busybox-static")
    t.file("bin/busybox", binary, 0o755)
    for a in APPLETS:
        t.symlink(f"bin/{a}", "busybox")
    return Layer(t.bytes())


def etc_layer() -> Layer:
    t = TarBuilder()
    t.dir("etc").file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    t.file("etc/group", b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    t.file("etc/motd", b"cri-shim test image\n")
    t.dir("www").file("www/.wh.placeholder", b"")  # a whiteout of nothing, as real images have
    return Layer(t.bytes())


def user_layer() -> Layer:
    t = TarBuilder()
    t.dir("home").dir("home/app").file("home/app/.profile", b"export APP=1\n")
    return Layer(t.bytes())


def image_config(layers: list[Layer], **config: object) -> bytes:
    os_, arch = "linux", GOARCH.get(platform.machine(), platform.machine())
    cfg = {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"}
    cfg.update(config)
    return json.dumps({
        "architecture": arch, "os": os_, "created": "2026-01-01T00:00:00Z", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }, sort_keys=True).encode()


class Pusher:
    """Just enough of the distribution API to push: monolithic blob uploads and manifests."""

    def __init__(self, registry: str, user: str = "", password: str = "") -> None:
        self.base = f"http://{registry}"
        self.auth = ("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()) if user else ""

    def _req(self, method: str, url: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(url if url.startswith("http") else self.base + url, data=data,
                                     method=method, headers=dict(headers or {}))
        if self.auth:
            req.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        code, _, _ = self._req("HEAD", f"/v2/{repo}/blobs/{digest}")
        if code == 200:
            return digest
        code, headers, body = self._req("POST", f"/v2/{repo}/blobs/uploads/")
        if code != 202:
            raise RuntimeError(f"starting upload to {repo}: {code} {body[:200]!r}")
        loc = headers["Location"]
        sep = "&" if "?" in loc else "?"
        code, _, body = self._req("PUT", f"{loc}{sep}digest={digest}", data,
                                  {"Content-Type": "application/octet-stream"})
        if code != 201:
            raise RuntimeError(f"uploading {digest} to {repo}: {code} {body[:200]!r}")
        return digest

    def manifest(self, repo: str, ref: str, body: bytes, media: str) -> str:
        code, _, out = self._req("PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": media})
        if code != 201:
            raise RuntimeError(f"pushing manifest {repo}:{ref}: {code} {out[:300]!r}")
        return sha(body)

    def image(self, repo: str, tag: str, layers: list[Layer], **config: object) -> str:
        cfg = image_config(layers, **config)
        descs = []
        for layer in layers:
            blob = layer.blob
            self.blob(repo, blob)
            descs.append({"mediaType": layer.media_type, "digest": sha(blob),
                          "size": len(blob)})
        self.blob(repo, cfg)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
                               "layers": descs}).encode()
        return self.manifest(repo, tag, manifest, OCI_MANIFEST)

    def artifact(self, repo: str, tag: str, files: list[ArtifactFile],
                 artifact_type: str = "application/vnd.example.data.v1",
                 config_media_type: str = OCI_EMPTY, config: bytes = b"{}") -> str:
        """An OCI 1.1 artifact: an image manifest with artifactType, the empty config (or
        another config type) and layers that are plain blobs with title annotations."""
        self.blob(repo, config)
        descs = []
        for f in files:
            self.blob(repo, f.data)
            desc: dict[str, object] = {"mediaType": f.media_type, "digest": sha(f.data), "size": len(f.data)}
            if f.title is not None:
                desc["annotations"] = {TITLE: f.title}
            descs.append(desc)
        manifest: dict[str, object] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type:
            manifest["artifactType"] = artifact_type
        manifest["config"] = {"mediaType": config_media_type, "digest": sha(config), "size": len(config)}
        manifest["layers"] = descs
        return self.manifest(repo, tag, json.dumps(manifest).encode(), OCI_MANIFEST)

    def index(self, repo: str, tag: str, entries: list[tuple[str, str, int]]) -> str:
        """entries: (arch, manifest digest, size)."""
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": s,
             "platform": {"os": "linux", "architecture": a}}
            for a, d, s in entries]}).encode()
        return self.manifest(repo, tag, body, OCI_INDEX)


def push_standard(registry: str, user: str = "", password: str = "") -> dict[str, str]:
    """Push the normal test images; return {name: manifest digest}."""
    p = Pusher(registry, user, password)
    base, etc = busybox_base(), etc_layer()
    out = {"busybox:latest": p.image("busybox", "latest", [base, etc])}
    out["busybox:nonroot"] = p.image("busybox", "nonroot", [base, etc, user_layer()], User="app")
    arch = GOARCH.get(platform.machine(), platform.machine())
    # The manifest for this host, and a different one claiming another architecture.
    here = out["busybox:latest"]
    other_arch = "s390x" if arch != "s390x" else "amd64"
    other = p.image("busybox", "other-arch", [base], Cmd=["false"])
    code, _, body = p._req("GET", f"/v2/busybox/manifests/{here}", headers={"Accept": OCI_MANIFEST})
    code2, _, body2 = p._req("GET", f"/v2/busybox/manifests/{other}", headers={"Accept": OCI_MANIFEST})
    out["busybox:multiarch"] = p.index("busybox", "multiarch",
                                       [(other_arch, other, len(body2)), (arch, here, len(body))])
    return out


def push_hostile(registry: str) -> dict[str, str]:
    p = Pusher(registry)
    base = busybox_base()
    out = {}
    out["hostile/dotdot:latest"] = p.image("hostile/dotdot", "latest", [
        base, Layer(TarBuilder().file("../../../../tmp/cri-shim-escaped-dotdot", b"pwned").bytes())])
    out["hostile/symlink:latest"] = p.image("hostile/symlink", "latest", [
        base, Layer(TarBuilder().symlink("evil", "/tmp")
                    .file("evil/cri-shim-escaped-symlink", b"pwned").bytes())])
    out["hostile/relsymlink:latest"] = p.image("hostile/relsymlink", "latest", [
        base, Layer(TarBuilder().symlink("up", "../../../../../../tmp")
                    .file("up/cri-shim-escaped-relsymlink", b"pwned").bytes())])
    out["hostile/hardlink:latest"] = p.image("hostile/hardlink", "latest", [
        base, Layer(TarBuilder().hardlink("shadow", "/etc/shadow").bytes())])
    truncated = Layer(TarBuilder().file("big", os.urandom(200_000)).bytes())
    blob = truncated.blob[: len(truncated.blob) // 2]
    # A layer whose stored blob is a cut-off gzip stream (its digest is of the cut bytes).
    cfg = image_config([base, truncated])
    p.blob("hostile/truncated", base.blob)
    p.blob("hostile/truncated", blob)
    p.blob("hostile/truncated", cfg)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
                           "layers": [
                               {"mediaType": OCI_LAYER_GZ, "digest": sha(base.blob), "size": len(base.blob)},
                               {"mediaType": OCI_LAYER_GZ, "digest": sha(blob), "size": len(blob)},
                           ]}).encode()
    out["hostile/truncated:latest"] = p.manifest("hostile/truncated", "latest", manifest, OCI_MANIFEST)
    return out


def wait_for_registry(registry: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{registry}/v2/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 401 from an auth-protected registry is an answer too
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"registry {registry} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", required=True, help="host:port of a plain-http registry")
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--hostile", action="store_true", help="also push the hostile images")
    a = ap.parse_args()
    for name, digest in push_standard(a.registry, a.user, a.password).items():
        print(f"{a.registry}/{name} {digest}")
    if a.hostile:
        for name, digest in push_hostile(a.registry).items():
            print(f"{a.registry}/{name} {digest}")


if __name__ == "__main__":
    main()
