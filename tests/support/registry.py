"""Debian's docker-registry (the distribution registry) on 127.0.0.1, for image tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import testimages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    user: str = ""
    password: str = ""
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def image(self, name: str) -> str:
        return f"{self.host}/{name}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.user:
            htpasswd = self.dir / "htpasswd"
            out = subprocess.run(["htpasswd", "-Bbn", self.user, self.password], capture_output=True,
                                 text=True, check=True).stdout
            htpasswd.write_text(out)
            auth = f"auth:\n  htpasswd:\n    realm: cri-shim-test\n    path: {htpasswd}\n"
        cfg = self.dir / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}")
        log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=log, stderr=log)
        log.close()
        testimages.wait_for_registry(self.host)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.dir / "data" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def blob_gets(self, digest: str) -> int:
        text = (self.dir / "registry.log").read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "GET /v2/" in line and f"/blobs/{digest}" in line)


def start_registry(base: Path, **kw: str) -> Registry:
    r = Registry(base, free_port(), **kw)
    r.start()
    return r


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain registry holding the standard and the hostile test images."""
    r = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        r.digests = testimages.push_standard(r.host)
        r.digests.update(testimages.push_hostile(r.host))
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def busybox_image(registry: Registry) -> str:
    return registry.image("busybox:latest")
