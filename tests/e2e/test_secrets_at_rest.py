"""Secrets at rest: nothing the daemon keeps can be read by another local user.

Container configs carry env values, which is how Kubernetes Secrets often reach
containers. The daemon's root and state directories live here under a directory any
user may traverse, so only the daemon's own modes stand between a local user and them.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import Pod

pytestmark = pytest.mark.root

SECRET = "s3cr3t-value-for-the-test"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_daemon(test_network: PodNetwork, busybox_image: str) -> Iterator[DaemonProcess]:
    base = Path(tempfile.mkdtemp(prefix="cri-shim-modes-", dir="/var/tmp"))
    base.chmod(0o755)  # anyone may walk up to the daemon's directories
    d = DaemonProcess(base, test_network.config_toml())
    try:
        d.start()
        d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox_image)))
        yield d
    finally:
        if d.channel is not None:
            for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
                d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))
        d.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def contents(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:  # namespace pins are files that cannot be read
        return b""


def readable_by_nobody(paths: list[Path]) -> list[str]:
    script = 'while IFS= read -r f; do if [ -r "$f" ]; then echo "$f"; fi; done'
    out = subprocess.run([*NOBODY, "sh", "-c", script], input="\n".join(map(str, paths)) + "\n",
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_nothing_under_root_and_state_dirs_is_readable_by_others(open_daemon: DaemonProcess,
                                                                 tmp_path: Path, busybox_image: str) -> None:
    d = open_daemon
    pod = Pod(d, "secrets", "runc", tmp_path / "logs", busybox_image)
    cfg = pod.container_config("app", ["sleep", "600"])
    cfg.envs.append(pb.KeyValue(key="PASSWORD", value=SECRET.encode()))
    cid = d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert pod.exec(cid, ["sh", "-c", "echo $PASSWORD"]).stdout.decode().strip() == SECRET

    files = [p for top in (d.root_dir, d.state_dir) for p in top.rglob("*")
             if p.is_file() and not p.is_symlink()]
    forms = (SECRET.encode(), SECRET.encode().hex().encode())  # the store keeps configs hex-encoded
    holding = [p for p in files if any(f in contents(p) for f in forms)]
    assert any(p.name == "config.json" for p in holding)  # the secret really is on disk
    assert any(p.name.startswith("containers.db") for p in holding)
    assert readable_by_nobody(files + [d.root_dir, d.state_dir]) == []
    for top in (d.root_dir, d.state_dir):
        assert stat.S_IMODE(top.stat().st_mode) == 0o700
    # Defence in depth: the files that hold configuration are root-only themselves.
    for p in holding + [f for f in files if f.suffix == ".db" or ".db-" in f.name]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    # Containers still read the pod files bind-mounted from the state dir as any user.
    other = pod.container_config("nonroot", ["sleep", "600"])
    other.linux.security_context.run_as_user.value = 1000
    nid = d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=other, sandbox_config=pod.config)).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=nid))
    r = pod.exec(nid, ["cat", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"])
    assert r.exit_code == 0 and b"secrets" in r.stdout, r.stderr
