"""Image logic without a registry: references, auth challenges, platforms, layer unpacking."""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
from pathlib import Path

import httpx
import pytest
import zstandard

from cri_shim.errors import InvalidArgument, Unauthenticated
from cri_shim.imaging import auth, layers, reference
from cri_shim.imaging.manifests import chain_ids, host_platform, select_platform
from cri_shim.imaging.registry_client import RegistryClient, base_urls
from tests.support.testimages import TarBuilder


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
        ("quay.io/x/y@sha256:" + "a" * 64, "quay.io/x/y@sha256:" + "a" * 64),
        ("r.io/x:t@sha256:" + "b" * 64, "r.io/x:t@sha256:" + "b" * 64),
    ],
)
def test_reference_normalisation(ref: str, expected: str) -> None:
    assert str(reference.parse(ref)) == expected


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a b", "x@sha256:short", "x:bad tag", "x:" + "t" * 200])
def test_bad_references(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        reference.parse(bad)


def test_challenges_and_credentials(tmp_path: Path) -> None:
    c = auth.parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry",
                        "scope": "repository:a:pull"}
    assert auth.parse_challenge('Basic realm="r"').scheme == "basic"  # type: ignore[union-attr]
    creds = auth.from_auth_config("", "", "dXNlcjpwdw==", "", "")
    assert (creds.username, creds.password) == ("user", "pw")
    f = tmp_path / "auth.json"
    f.write_text('{"auths": {"reg.example": {"auth": "YTpi"}}}')
    assert auth.from_auth_file(str(f), "reg.example").username == "a"
    assert auth.from_auth_file(str(f), "other").empty


def test_plain_http_only_for_local_and_insecure() -> None:
    assert base_urls("127.0.0.1:5000", [], {}) == ["http://127.0.0.1:5000"]
    assert base_urls("reg.example", [], {}) == ["https://reg.example"]
    assert base_urls("reg.example", ["reg.example"], {}) == ["http://reg.example"]
    mirrored = base_urls("docker.io", [], {"docker.io": ["http://m:1/"]})
    assert mirrored == ["http://m:1", "https://registry-1.docker.io"]


def test_server_replaces_the_registry() -> None:
    assert base_urls("gcr.io", [], {}, {"gcr.io": "http://127.0.0.1:5000/"}) == ["http://127.0.0.1:5000"]
    both = base_urls("gcr.io", [], {"gcr.io": ["http://m:1"]}, {"gcr.io": "http://s:2"})
    assert both == ["http://m:1", "http://s:2"]
    assert base_urls("quay.io", [], {}, {"gcr.io": "http://s:2"}) == ["https://quay.io"]


def test_bearer_token_flow() -> None:
    asyncio.run(_bearer_token_flow())


async def _bearer_token_flow() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(f"{req.url.path} {req.headers.get('authorization', '')}")
        if req.url.path == "/token":
            assert req.url.params["scope"] == "repository:lib/app:pull"
            assert req.headers["authorization"].startswith("Basic ")
            return httpx.Response(200, json={"token": "T0K"})
        if req.headers.get("authorization") != "Bearer T0K":
            return httpx.Response(401, headers={"www-authenticate":
                                                'Bearer realm="https://reg.example/token",service="reg"'})
        return httpx.Response(200, content=b"{}", headers={"content-type": "application/json"})

    ref = reference.parse("reg.example/lib/app:v1")
    client = RegistryClient(ref, auth.Credentials("u", "p"), [], {}, 5)
    client.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    media, body, _ = await client.manifest("v1")
    assert body == b"{}" and media == "application/json"
    assert seen[1].startswith("/token Basic") and seen[2].endswith("Bearer T0K")
    await client.aclose()

    def deny(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/token":
            return httpx.Response(401)
        return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://reg.example/token"'})

    client = RegistryClient(ref, auth.Credentials("u", "bad"), [], {}, 5)
    client.client = httpx.AsyncClient(transport=httpx.MockTransport(deny))
    with pytest.raises(Unauthenticated, match="credentials rejected"):
        await client.manifest("v1")
    await client.aclose()


def test_platform_selection() -> None:
    os_, arch, _ = host_platform()
    index = {"manifests": [
        {"digest": "sha256:other", "platform": {"os": "linux", "architecture": "mips64"}},
        {"digest": "sha256:mine", "platform": {"os": os_, "architecture": arch}},
    ]}
    assert select_platform(index, "x") == "sha256:mine"
    with pytest.raises(Exception, match="no manifest for platform"):
        select_platform({"manifests": index["manifests"][:1]}, "x")


def test_chain_ids() -> None:
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    chain = chain_ids([a, b])
    assert chain[0] == a and chain[1].startswith("sha256:") and chain[1] != b


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteout device nodes and trusted xattrs need root")
@pytest.mark.parametrize("codec", ["gzip", "zstd", "plain"])
def test_unpack_whiteouts_and_codecs(tmp_path: Path, codec: str) -> None:
    tar = (TarBuilder().dir("d").file("d/keep", b"x").file("d/.wh.gone", b"").dir("o")
           .file("o/.wh..wh..opq", b"").symlink("abs", "/etc/passwd").file("f", b"data", 0o640)
           .hardlink("f2", "f").bytes())
    blob = {"gzip": gzip.compress(tar), "zstd": zstandard.ZstdCompressor().compress(tar), "plain": tar}[codec]
    src = tmp_path / "blob"
    src.write_bytes(blob)
    diff_id, size = layers.unpack(src, tmp_path / "out", "test")
    out = tmp_path / "out"
    assert diff_id.startswith("sha256:")
    st = os.lstat(out / "d" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(out / "o", "trusted.overlay.opaque") == b"y"
    assert os.readlink(out / "abs") == "/etc/passwd"
    assert stat.S_IMODE(os.stat(out / "f").st_mode) == 0o640
    assert os.stat(out / "f").st_ino == os.stat(out / "f2").st_ino and size == 5


def test_unpack_rejects_escapes(tmp_path: Path) -> None:
    cases = {
        "dotdot": TarBuilder().file("a/../../x", b"1").bytes(),
        "through-symlink": TarBuilder().symlink("s", "/tmp").file("s/x", b"1").bytes(),
        "hardlink-out": TarBuilder().hardlink("h", "../../etc/passwd").bytes(),
        "hardlink-through-symlink": TarBuilder().symlink("e", "/etc").hardlink("h", "e/passwd").bytes(),
        # The unpacker keeps the last parent directory open: a directory replaced by a symlink
        # between two members in it must not be written through.
        "dir-then-symlink": TarBuilder().dir("a").file("a/x", b"1").symlink("a", "/tmp")
        .file("a/x", b"1").bytes(),
        "gzip-dir-then-symlink": gzip.compress(TarBuilder().dir("b").file("b/x", b"1").symlink("b", "/tmp")
                                               .file("b/x", b"1").bytes()),
    }
    for name, tar in cases.items():
        src = tmp_path / f"{name}.tar"
        src.write_bytes(tar)
        with pytest.raises(InvalidArgument):
            layers.unpack(src, tmp_path / name, name)
    assert not Path("/tmp/x").exists()
