"""OCI artifacts (imaging.artifacts): which manifests are artifacts, layer titles, the file tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cri_shim.errors import InvalidArgument
from cri_shim.imaging import artifacts
from cri_shim.imaging.artifacts import ArtifactLayer

EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + "4" * 64, "size": 2}
IMAGE_CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64}


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def layer(n: int, title: str | None = None, media: str = "text/plain") -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media, "digest": digest(n), "size": 3}
    if title is not None:
        d["annotations"] = {artifacts.TITLE: title}
    return d


def manifest(layers: list[dict[str, Any]], config: dict[str, Any] = EMPTY, **extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "config": config, "layers": layers, **extra}


@pytest.mark.parametrize(("doc", "want"), [
    (manifest([], EMPTY, artifactType="application/vnd.example.data.v1"), "application/vnd.example.data.v1"),
    (manifest([], EMPTY), "application/vnd.oci.empty.v1+json"),  # no artifactType: the config type
    (manifest([], {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": digest(1)}),
     "application/vnd.cncf.helm.config.v1+json"),
    (manifest([], IMAGE_CONFIG), ""),  # a runnable image
    (manifest([], {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest(1)}), ""),
    (manifest([], {"digest": digest(1)}), ""),  # no config media type: an image, as before
    # an image config with artifactType (ORAS's default when pushing with an image config)
    (manifest([], IMAGE_CONFIG, artifactType="application/vnd.example.v1"), "application/vnd.example.v1"),
])
def test_artifact_type(doc: dict[str, Any], want: str) -> None:
    assert artifacts.artifact_type(doc) == want


@pytest.mark.parametrize(("media", "tar"), [
    ("application/vnd.oci.image.layer.v1.tar", True),
    ("application/vnd.oci.image.layer.v1.tar+gzip", True),
    ("application/vnd.oci.image.layer.v1.tar+zstd", True),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", True),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", True),
    ("application/x-tar", True),
    ("application/vnd.example.data.v1", False),
    ("text/plain", False),
    ("application/octet-stream", False),
    ("application/vnd.example.tarball", False),
    ("", False),
])
def test_is_tar_type(media: str, tar: bool) -> None:
    assert artifacts.is_tar_type(media) is tar


@pytest.mark.parametrize("title", ["a.txt", "conf/app.yaml", "dir/sub/file", ".hidden", "a..b", "x y"])
def test_good_titles(title: str) -> None:
    assert artifacts.check_title(title, digest(1)) == title


@pytest.mark.parametrize(("title", "words"), [
    ("", "is empty"), ("..", "'..'"), ("../etc/passwd", "'..'"), ("a/../../b", "'..'"), (".", "'.'"),
    ("a/./b", "'.'"), ("/etc/passwd", "absolute"), ("a//b", "empty path component"),
    ("dir/", "empty path component"), ("a\0b", "NUL"), ("x" * 256, "longer than 255"),
])
def test_bad_titles(title: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        artifacts.check_title(title, digest(7))
    assert digest(7) in str(info.value) and repr(title) in str(info.value) and words in str(info.value)


def test_plan_names_and_kinds() -> None:
    got = artifacts.plan(manifest([
        layer(1, "hello.txt"),
        layer(2, "dir.tar.gz", "application/vnd.oci.image.layer.v1.tar+gzip"),
        layer(3),  # untitled: named by its digest
        layer(4, None, "application/vnd.oci.empty.v1+json"),  # the placeholder: nothing
        layer(5, "conf/app.yaml", "application/vnd.example.data.v1"),
    ]), "artifact x")
    assert got == [
        ArtifactLayer(digest(1), "text/plain", 3, "hello.txt", False),
        ArtifactLayer(digest(2), "application/vnd.oci.image.layer.v1.tar+gzip", 3, "", True),
        ArtifactLayer(digest(3), "text/plain", 3, digest(3), False),
        ArtifactLayer(digest(5), "application/vnd.example.data.v1", 3, "conf/app.yaml", False),
    ]


def test_plan_refuses_duplicates_and_clashes() -> None:
    with pytest.raises(InvalidArgument) as info:
        artifacts.plan(manifest([layer(1, "same"), layer(2, "same")]), "artifact x")
    assert digest(1) in str(info.value) and digest(2) in str(info.value) and "'same'" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        artifacts.plan(manifest([layer(1, "conf"), layer(2, "conf/app.yaml")]), "artifact x")
    assert "'conf' is a file" in str(info.value) and digest(2) in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        artifacts.plan(manifest([layer(1, "../x")]), "artifact x")
    assert digest(1) in str(info.value)
    # tar layers' titles only name the archive; they are not paths in the artifact
    assert artifacts.plan(manifest([layer(1, "../x.tar", "application/vnd.oci.image.layer.v1.tar")]), "a")
    for bad in ([{"mediaType": "text/plain"}], [layer(1) | {"size": -1}]):
        with pytest.raises(InvalidArgument):
            artifacts.plan(manifest(bad), "artifact x")


def test_materialise_files_never_through_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for n, data in ((1, b"one\n"), (2, b"two\n"), (3, b"three\n")):
        (blobs / str(n)).write_bytes(data)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "snap" / "tmp"
    plan = [ArtifactLayer(digest(1), "text/plain", 4, "a.txt", False),
            ArtifactLayer(digest(2), "text/plain", 4, "conf/x.yaml", False),
            ArtifactLayer(digest(3), "text/plain", 6, "a.txt", False)]

    def blob(d: str) -> Path:
        return blobs / str(int(d.split(":")[1], 16))

    # what an earlier tar layer could leave: "conf" a symlink out of the tree
    real_write = artifacts.write_file

    def write_after_symlink(root: Path, name: str, src: Path) -> int:
        if name == "conf/x.yaml":
            os.symlink(outside, root / "conf")
        return real_write(root, name, src)

    monkeypatch.setattr(artifacts, "write_file", write_after_symlink)
    size = artifacts.materialise(plan, blob, dest, "artifact x")
    assert size == 14
    assert (dest / "a.txt").read_bytes() == b"three\n"  # the later layer wins
    assert not (dest / "conf").is_symlink() and (dest / "conf" / "x.yaml").read_bytes() == b"two\n"
    assert list(outside.iterdir()) == []
    assert (dest / "a.txt").stat().st_mode & 0o7777 == 0o644
    assert not (tmp_path / "snap" / "tmp.layer").exists()
