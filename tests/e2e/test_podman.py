"""pyrunc under podman (issue 14 item 4): Debian's podman drives pyrunc as it drives runc.

Everything is private to the test: podman's storage and run directories (--root, --runroot),
pyrunc's state directory (--runtime-flag root=...), a containers.conf (CONTAINERS_CONF) with the
cgroupfs manager, and no network (--network none: the pod's containers share a namespace with
only loopback, and nothing is added to the host's CNI networks). The image is a busybox rootfs
from this host's /bin/busybox, `podman import`ed: nothing is downloaded. The pod's infra image
is podman's own, built locally from catatonit.

Skips only where podman is not installed (hack/setup-host.sh installs it).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.testimages import busybox_base

PODMAN = shutil.which("podman")
PYRUNC = str(Path(sys.executable).parent / "pyrunc")
IMAGE = "localhost/busybox:pyrunc-test"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(PODMAN is None, reason="podman is not installed (Debian's podman; "
                                              "hack/setup-host.sh installs it)"),
]


def _containers_conf() -> str:
    """podman asks for RLIMIT_NOFILE/NPROC far above the hard limits of a host (or a container)
    without CAP_SYS_RESOURCE, and every runtime (runc as well) fails to raise them; ask for
    what this process has. podman lowers its own RLIMIT_NPROC to pid_max."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    return (f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            '[engine]\ncgroup_manager = "cgroupfs"\n')


class Podman:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "pyrunc-state"
        self.conf = base / "containers.conf"
        self.conf.write_text(_containers_conf())
        self.log = base / "pyrunc.log"
        # pyrunc with a private state directory. A wrapper, not --runtime-flag root=...: podman
        # does not pass its runtime flags to the clean-up process that conmon starts at exit.
        self.runtime = base / "pyrunc"
        self.runtime.write_text(f'#!/bin/sh\nexec {PYRUNC} --root {self.state} "$@"\n')
        self.runtime.chmod(0o755)
        self.prefix = [PODMAN or "podman", "--root", str(base / "storage"), "--runroot", str(base / "run"),
                       "--cgroup-manager", "cgroupfs", "--runtime", str(self.runtime)]

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            fd3: str | None = None) -> subprocess.CompletedProcess[str]:
        """podman with `args`; with `fd3`, that file open on podman's descriptor 3."""
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        argv = [*self.prefix, *args]
        if fd3 is not None:
            argv = ["sh", "-c", 'f=$1; shift; exec "$@" 3<"$f"', "sh", fd3, *argv]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\n"
                                 f"stderr: {p.stderr}\npyrunc log: {self.log_text()}")
        return p

    def log_text(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        for args in (["pod", "rm", "-af", "-t", "0"], ["rm", "-af", "-t", "0"], ["rmi", "-af"]):
            self.run(*args, check=False, timeout=120)
        # podman leaves its overlay storage mounted (shm, the driver's own bind mount)
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m.startswith(str(self.base) + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    base = Path(tmp_path_factory.mktemp("podman"))
    pm = Podman(base)
    tar = base / "busybox.tar"
    tar.write_bytes(busybox_base().tar)
    try:
        pm.run("import", "--change", "ENV PATH=/bin", "--change", 'CMD ["sh"]', str(tar), IMAGE)
        yield pm
    finally:
        pm.cleanup()


def test_run_rm_echo(podman: Podman) -> None:
    p = podman.run("run", "--rm", "--network", "none", IMAGE, "echo", "hi")
    assert p.stdout == "hi\n"


def test_exit_code_and_a_missing_command(podman: Podman) -> None:
    assert podman.run("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "exit 3",
                      check=False).returncode == 3
    # global flags podman passes from --runtime-flag: pyrunc logs to the file, in JSON
    p = podman.run("--runtime-flag", f"log={podman.log}", "--runtime-flag", "log-format=json",
                   "run", "--rm", "--network", "none", IMAGE, "/nonexistent", check=False)
    assert p.returncode == 127, p.stderr  # podman's "command not found" code, from pyrunc's message
    assert 'exec: "/nonexistent": stat /nonexistent: no such file or directory' in p.stderr
    lines = [json.loads(line) for line in podman.log.read_text().splitlines()]
    assert any(e["level"] == "error" and "/nonexistent" in e["msg"] and e["time"] for e in lines)


# the descriptors of the container's shell, with the one its glob opened: the last, or 3 without others
FDS = "for f in /proc/self/fd/*; do echo ${f##*/}; done"


def test_the_container_gets_no_descriptor_but_stdio_and_preserved_ones(podman: Podman) -> None:
    p = podman.run("run", "--rm", "--network", "none", IMAGE, "sh", "-c", FDS, fd3="/etc/hostname")
    assert p.stdout.split() == ["0", "1", "2", "3"], p.stdout  # podman's fd 3 did not leak in
    p = podman.run("run", "--rm", "--network", "none", "--preserve-fds", "1", IMAGE, "sh", "-c",
                   f"{FDS}; cat <&3", fd3="/etc/hostname")
    assert p.stdout.split()[:5] == ["0", "1", "2", "3", "4"], p.stdout
    assert p.stdout.endswith(Path("/etc/hostname").read_text()), p.stdout


def test_detached_container_exec_and_stop(podman: Podman) -> None:
    cid = podman.run("run", "-d", "--network", "none", "--name", "sleeper", IMAGE, "sleep", "300")\
        .stdout.strip()
    assert (podman.state / cid).is_dir()  # pyrunc, with the root podman passed, holds it
    assert podman.run("exec", "sleeper", "echo", "exec-ok").stdout == "exec-ok\n"
    assert podman.run("exec", "sleeper", "sh", "-c", "exit 7", check=False).returncode == 7
    assert podman.run("exec", "-t", "sleeper", "sh", "-c", "[ -t 1 ] && echo tty").stdout.strip() == "tty"
    assert podman.run("exec", "sleeper", "sh", "-c", FDS).stdout.split() == ["0", "1", "2", "3"]
    p = podman.run("exec", "--preserve-fds", "1", "sleeper", "sh", "-c", f"{FDS}; cat <&3",
                   fd3="/etc/hostname")
    assert p.stdout.split()[:5] == ["0", "1", "2", "3", "4"], p.stdout
    assert p.stdout.endswith(Path("/etc/hostname").read_text()), p.stdout
    top = podman.run("top", "sleeper").stdout
    assert "sleep 300" in top
    inspect = json.loads(podman.run("inspect", "sleeper").stdout)[0]
    assert inspect["OCIRuntime"] == str(podman.runtime) and inspect["State"]["Running"]
    podman.run("pause", "sleeper")
    assert json.loads(podman.run("inspect", "sleeper").stdout)[0]["State"]["Status"] == "paused"
    podman.run("unpause", "sleeper")
    podman.run("stop", "-t", "1", "sleeper")
    assert json.loads(podman.run("inspect", "sleeper").stdout)[0]["State"]["Status"] == "exited"
    podman.run("rm", "sleeper")
    assert not (podman.state / cid).exists()


def test_systemd_cgroup_is_refused_with_a_clear_message(podman: Podman) -> None:
    p = podman.run("--cgroup-manager", "systemd", "run", "--rm", "--network", "none", IMAGE, "true",
                   check=False)
    assert p.returncode != 0
    assert "--systemd-cgroup is not supported: pyrunc has no systemd cgroup driver" in p.stderr, p.stderr
    assert "--cgroup-manager cgroupfs" in p.stderr


def test_pod_of_two_containers_sharing_the_network(podman: Podman) -> None:
    podman.run("pod", "create", "--name", "pyrunc-pod", "--network", "none")
    try:
        podman.run("run", "-d", "--pod", "pyrunc-pod", "--name", "web", IMAGE, "sh", "-c",
                   "mkdir -p /www && echo served-by-web > /www/index.html && exec httpd -f -p 8080 -h /www")
        client = "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1"
        p = podman.run("run", "--rm", "--pod", "pyrunc-pod", IMAGE, "sh", "-c", client)
        assert p.stdout == "served-by-web\n"
        assert podman.run("exec", "web", "cat", "/www/index.html").stdout == "served-by-web\n"
        ps = json.loads(podman.run("pod", "ps", "--format", "json").stdout)
        pod = next(x for x in ps if x["Name"] == "pyrunc-pod")
        assert pod["Status"] == "Running" and len(pod["Containers"]) == 2  # infra + web
        infra = json.loads(podman.run("pod", "inspect", "pyrunc-pod").stdout)["InfraContainerID"]
        assert json.loads(podman.run("inspect", infra).stdout)[0]["OCIRuntime"] == str(podman.runtime)
        podman.run("pod", "stop", "-t", "1", "pyrunc-pod")
    finally:
        podman.run("pod", "rm", "-f", "-t", "0", "pyrunc-pod", check=False)
    assert list(podman.state.iterdir()) == []  # the pod's containers are gone from pyrunc's state
