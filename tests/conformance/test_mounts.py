"""Mounts, their options and propagation; masked and read-only paths."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from oci.builder import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from tests.conformance.conftest import Harness

pytestmark = pytest.mark.root


def _mount_line(stdout: str, target: str) -> list[str]:
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == target:
            return fields
    raise AssertionError(f"{target} not in mounts:\n{stdout}")


def test_default_mounts_present(h: Harness) -> None:
    result = h.run(h.spec("cat", "/proc/self/mounts"))
    expected = {"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
                "/dev/mqueue": "mqueue", "/sys": "sysfs"}
    for target, fstype in expected.items():
        assert _mount_line(result.stdout, target)[2] == fstype, target
    assert "ro" in _mount_line(result.stdout, "/sys")[3].split(",")
    assert "nosuid" in _mount_line(result.stdout, "/dev/shm")[3].split(",")


def test_default_devices(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "for d in null zero full random urandom tty; do "
                                      "stat -c '%n %t:%T %F' /dev/$d; done; echo x > /dev/null && echo ok"))
    lines = result.stdout.splitlines()
    expected = ["null 1:3", "zero 1:5", "full 1:7", "random 1:8", "urandom 1:9", "tty 5:0"]
    assert lines[:6] == [f"/dev/{d} character special file" for d in expected], result
    assert lines[6] == "ok"


def test_device_cgroup_denies_unlisted_devices(h: Harness) -> None:
    # /dev/loop-control (10:237) is not in the allow list: mknod must be refused by the device cgroup
    result = h.run(h.spec("sh", "-c", "mknod /tmp/lc c 10 237 && echo created; cat /tmp/lc 2>&1; echo done"))
    assert "done" in result.stdout and "Operation not permitted" in result.stdout + result.stderr, result


def test_bind_mount_rw_and_ro(h: Harness, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "existing").write_text("hello")
    b = h.spec("sh", "-c", "echo written > /rw/file; cat /ro/existing; echo; touch /ro/new 2>&1; true")
    b.bind_mount(str(rw), "/rw").bind_mount(str(ro), "/ro", readonly=True)
    result = h.run(b)
    assert (rw / "file").read_text() == "written\n"
    assert result.stdout.startswith("hello\n"), result
    assert "Read-only file system" in result.stdout + result.stderr, result
    assert not (ro / "new").exists()


def test_tmpfs_mount_options(h: Harness) -> None:
    b = h.spec("cat", "/proc/self/mounts").add_mount("/scratch", "tmpfs", "tmpfs",
                                                     ["nosuid", "nodev", "size=1m", "mode=755"])
    result = h.run(b)
    fields = _mount_line(result.stdout, "/scratch")
    opts = fields[3].split(",")
    assert fields[2] == "tmpfs" and "size=1024k" in opts and "mode=755" in opts and "nosuid" in opts, fields


def test_readonly_rootfs(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "touch /newfile 2>&1; echo ok > /dev/shm/x && echo shm-ok")
                   .rootfs("rootfs", readonly=True))
    assert "Read-only file system" in result.stdout and "shm-ok" in result.stdout, result


@pytest.mark.parametrize("propagation,visible", [("rslave", True), ("rprivate", False)])
def test_bind_mount_propagation(h: Harness, tmp_path: Path, propagation: str, visible: bool) -> None:
    """A mount made on the host after start reaches the container only through a slave mount."""
    src = tmp_path / "shared"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        b = h.spec("sh", "-c", "echo ready; while [ ! -e /data/go ]; do sleep 0.02; done; "
                               "cat /data/sub/marker 2>/dev/null || echo absent")
        b.bind_mount(str(src), "/data", propagation=propagation)
        if propagation == "rslave":
            # as the CRI plugin does for HostToContainer mounts: crun otherwise makes the whole
            # tree private after the bind mounts and the slave link is lost
            b.rootfs_propagation("rslave")
        c = h.start(b)
        h.wait_for_output(c, "ready")
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
        (src / "sub" / "marker").write_text("propagated\n")
        (src / "go").touch()
        result = h.wait(c)
        assert result.stdout.split()[-1] == ("propagated" if visible else "absent"), result
        h.rt.delete(c.id)
    finally:
        subprocess.run(["umount", "-R", str(src)], check=False)


def test_rootfs_propagation_shared_reaches_host(h: Harness, tmp_path: Path) -> None:
    """rootfsPropagation=rshared: a mount made inside a shared bind mount shows up on the host."""
    src = tmp_path / "shared"
    src.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        b = h.spec("sh", "-c", "mkdir -p /data/inner && mount -t tmpfs inner /data/inner && echo mounted")
        b.bind_mount(str(src), "/data", propagation="rshared").rootfs_propagation("rshared")
        b.add_capabilities("CAP_SYS_ADMIN")
        result = h.run(b)
        assert "mounted" in result.stdout, result
        mounts = Path("/proc/self/mountinfo").read_text()
        assert f"{src}/inner " in mounts, "mount did not propagate back to the host"
    finally:
        subprocess.run(["umount", "-R", str(src)], check=False)


def test_default_masked_paths(h: Harness) -> None:
    # the kernel decides which of these exist; runtimes skip the missing ones
    present = [p for p in DEFAULT_MASKED_PATHS if os.path.exists(p)]
    assert present, "none of the default masked paths exists on this host"
    script = "; ".join(f"echo {p} $(cat {p} 2>/dev/null | wc -c) $(ls -A {p} 2>/dev/null | wc -l)"
                       for p in present)
    result = h.run(h.spec("sh", "-c", script))
    masked = dict((line.split()[0], line.split()[1:]) for line in result.stdout.splitlines())
    for p in present:
        is_dir = os.path.isdir(p)
        size, entries = masked[p]
        assert (entries if is_dir else size) == "0", f"{p} is not masked: {result}"


def test_custom_masked_path(h: Harness) -> None:
    b = h.spec("sh", "-c", "cat /etc/hostname | wc -c; ls /home | wc -l")
    result = h.run(b.masked_paths(["/etc/hostname", "/home"]))
    assert result.stdout.split() == ["0", "0"], result


def test_default_readonly_paths(h: Harness) -> None:
    script = "cat /proc/self/mountinfo; (echo x > /proc/sys/kernel/domainname) 2>&1"
    result = h.run(h.spec("sh", "-c", script))
    ro_mounts = {f[4] for f in (line.split() for line in result.stdout.splitlines() if " - " in line)
                 if "ro" in f[5].split(",")}
    for p in DEFAULT_READONLY_PATHS:
        if os.path.exists(p):
            assert p in ro_mounts, f"{p} is not a read-only mount: {result}"
    assert "Read-only file system" in result.stdout, result


def test_custom_readonly_path(h: Harness) -> None:
    b = h.spec("sh", "-c", "touch /home/app/f 2>&1; touch /tmp/f && echo tmp-ok").readonly_paths(["/home"])
    result = h.run(b)
    assert "Read-only file system" in result.stdout and "tmp-ok" in result.stdout, result
