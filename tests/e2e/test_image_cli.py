"""`cri-shim images pull` (progress from the daemon) and `cri-shim images import`."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.daemon import CRI_SHIM, DaemonProcess
from tests.support.registry import Registry

pytestmark = pytest.mark.root


def cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CRI_SHIM + ["images", *args[:1], "--socket", str(d.socket), "--state-dir", str(d.state_dir),
                    "--root-dir", str(d.root_dir), *args[1:]],
        capture_output=True, text=True, timeout=120)


def status_id(d: DaemonProcess, ref: str) -> str:
    return d.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))).image.id


def test_cli_pull_shows_progress(daemon: DaemonProcess, registry: Registry) -> None:
    ref = registry.image("busybox:nonroot")
    out = cli(daemon, "pull", ref)
    assert out.returncode == 0, out.stderr
    image_id = out.stdout.strip()
    assert image_id.startswith("sha256:") and status_id(daemon, ref) == image_id
    assert "%" in out.stderr and ref in out.stderr and "MB" in out.stderr
    bad = cli(daemon, "pull", registry.image("nope:latest"))
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr


def skopeo(src: str, dest: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{src}", dest],
                   check=True, capture_output=True, timeout=120)


def test_cli_import_oci_layout_dir_and_tar(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    skopeo(registry.image("busybox:latest"), f"oci:{layout}:v1")
    out = cli(daemon, "import", str(layout), "--name", "example.com/imported/busybox")
    assert out.returncode == 0, out.stderr
    image_id = out.stdout.strip()
    assert status_id(daemon, "example.com/imported/busybox:v1") == image_id  # the daemon saw SIGHUP
    tar = tmp_path / "layout.tar"
    with tarfile.open(tar, "w") as t:
        t.add(layout, arcname=".")
    out = cli(daemon, "import", str(tar), "--name", "example.com/imported/again")
    assert out.returncode == 0, out.stderr
    assert status_id(daemon, "example.com/imported/again:v1") == image_id


def test_cli_import_docker_archive(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    skopeo(registry.image("busybox:nonroot"), f"docker-archive:{archive}:example.com/saved/busybox:s1")
    out = cli(daemon, "import", str(archive))
    assert out.returncode == 0, out.stderr
    assert status_id(daemon, "example.com/saved/busybox:s1") == out.stdout.strip()


def test_cli_import_bad_input(daemon: DaemonProcess, tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not an archive")
    for path, text in ((tmp_path / "missing", "does not exist"), (tmp_path / "junk", "not a readable tar"),
                       (tmp_path, "neither an OCI image layout nor a docker save archive")):
        out = cli(daemon, "import", str(path))
        assert out.returncode == 2 and text in out.stderr, out.stderr
    assert daemon.images.ListImages(pb.ListImagesRequest()).images == []
