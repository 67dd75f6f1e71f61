"""Issue 13 item 3 through the socket, on pyrunc and runc: the seccomp profile recorder.

A recorded run, the same run under its profile as a Localhost profile, one call more (denied
with EPERM), unchanged exit codes and signals, a killed daemon leaving its container running
untraced, and refused annotations. Every test checks that no tracer is left behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from cri_shim.seccomp_recorder.annotation import ANNOTATION
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import Pod, serving_pods

pytestmark = pytest.mark.root

HANDLERS = ["pyrunc", "runc"]
TRACER = b"cri_shim.seccomp_recorder.tracer"

# A shell script that forks, execs, writes files, pipes, handles a signal it sends itself, stops
# and continues a child ("T (stopped)" untraced, "t (tracing stop)" while traced: the stopped
# tracee is held with PTRACE_LISTEN), and reaps a child killed by a signal and one that exits
# with a code; with "extra" it also tries one call the recording never saw
# (unshare(CLONE_NEWUSER)). The background child is never `wait`ed for: that blocks in
# rt_sigsuspend or not depending on whether the child is gone yet, and a recording has only the
# calls its own run made.
SCRIPT = r"""
echo start
for i in 1 2 3; do echo "line $i" > /tmp/f; cat /tmp/f | wc -c; done
ls /bin > /dev/null
trap 'echo got-usr1' USR1
kill -USR1 $$
sleep 30 & p=$!
kill -STOP $p
until grep -q '^State:.*stop' /proc/$p/status; do :; done
echo stopped
kill -CONT $p
until grep -q '^State:.*sleeping' /proc/$p/status; do :; done
echo continued
kill -KILL $p
sh -c 'kill -TERM $$'; echo "child=$?"
sh -c 'exit 5'; echo "sub=$?"
if [ "$1" = extra ]; then unshare -U true; echo "extra=$?"; fi
exit 7
"""


@pytest.fixture
def node(daemon_factory, test_network: PodNetwork, busybox_image: str, tmp_path: Path):  # noqa: F811
    yield from serving_pods(daemon_factory, test_network, busybox_image,
                            f'[seccomp]\nrecorder_dir = "{tmp_path / "recordings"}"\n')
    assert tracers() == [], "a tracer was left behind"


def tracers() -> list[int]:
    """Pids of running seccomp recorder tracers (zombies excluded)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if TRACER in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def tracer_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no TracerPid in /proc/{pid}/status")


def create(d: DaemonProcess, pod: Pod, name: str, command: list[str], *, record: str = "",
           profile: Path | None = None) -> str:
    cfg = pod.container_config(name, command)
    if record:
        cfg.annotations[ANNOTATION] = record
    if profile is not None:
        cfg.linux.security_context.seccomp.profile_type = pb.SecurityProfile.Localhost
        cfg.linux.security_context.seccomp.localhost_ref = str(profile)
    return d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id


def run_to_exit(d: DaemonProcess, pod: Pod, cid: str) -> tuple[int, str, str]:
    """Start, wait for the exit; the exit code, stdout and stderr (each in order; their
    interleaving depends on how conmon reads its two pipes, so they are kept apart)."""
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = pod.wait_state(cid, pb.CONTAINER_EXITED, timeout=60)
    # Stop returns once the recorder (if any) has written its profile.
    d.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for line in Path(st.log_path).read_text().splitlines():
        _, stream, _, text = line.split(" ", 3)
        out[stream].append(text)
    return st.exit_code, "\n".join(out["stdout"]), "\n".join(out["stderr"])


def load(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == 1
    assert doc["architectures"] == ["SCMP_ARCH_X86_64"]
    assert [r["action"] for r in doc["syscalls"]] == ["SCMP_ACT_ALLOW"]
    return doc


@pytest.mark.parametrize("handler", HANDLERS)
def test_script_recorded_replayed_and_one_call_more_denied(node: DaemonProcess, handler: str,
                                                          tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(node, f"rec-sh-{handler}", handler, tmp_path / "logs", busybox_image)
    cmd = ["sh", "-c", SCRIPT, "sh"]
    plain = run_to_exit(node, pod, create(node, pod, "plain", cmd))[:2]
    rec = create(node, pod, "recorded", cmd, record=f"of:script-{handler}.json")
    recorded = run_to_exit(node, pod, rec)[:2]
    # tracing changes nothing: same exit code, same output (the trap ran, the stop held, the
    # stopped child continued, the exit statuses came through)
    expected = "start\n7\n7\n7\ngot-usr1\nstopped\ncontinued\nchild=143\nsub=5"
    assert plain == recorded == (7, expected), recorded
    path = tmp_path / "recordings" / f"script-{handler}.json"
    names = load(path)["syscalls"][0]["names"]
    assert {"execve", "clone", "wait4", "kill", "rt_sigreturn", "openat", "write"} <= set(names)
    assert "unshare" not in names and "mount" not in names
    assert tracers() == []
    # the profile, as a Localhost profile, runs the same script
    assert run_to_exit(node, pod, create(node, pod, "replay", cmd, profile=path))[:2] == recorded
    # one call more: EPERM, where it works unconfined
    code, out, err = run_to_exit(node, pod, create(node, pod, "extra-plain", cmd + ["extra"]))
    assert (code, out.rsplit("\n", 1)[1]) == (7, "extra=0"), (out, err)
    code, out, err = run_to_exit(node, pod, create(node, pod, "extra", cmd + ["extra"], profile=path))
    assert (code, out.rsplit("\n", 1)[1]) == (7, "extra=1"), (out, err)
    assert "unshare" in err and "Operation not permitted" in err, err


def wait_listening(pid: int, port: int, timeout: float = 20) -> None:
    """Until the process's network namespace has a TCP socket listening on `port`."""
    want = f":{port:04X} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want.strip()) and fields[3] == "0A":
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port} in process {pid}'s network namespace")


@pytest.mark.parametrize("handler", HANDLERS)
def test_httpd_recorded_and_replayed(node: DaemonProcess, handler: str, tmp_path: Path,
                                     busybox_image: str) -> None:
    pod = Pod(node, f"rec-httpd-{handler}", handler, tmp_path / "logs", busybox_image)
    client = pod.run("client", ["sleep", "3600"])
    pod.wait_state(client, pb.CONTAINER_RUNNING)
    serve = ["sh", "-c", "mkdir -p /tmp/www && echo hello from httpd > /tmp/www/index.html && "
                         "exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]

    def serve_one(cid: str) -> tuple[str, int]:
        node.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        wait_listening(_pid(node, cid), 8080)
        got = pod.exec(client, ["wget", "-q", "-O-", "http://127.0.0.1:8080/index.html"])
        assert got.exit_code == 0, got
        # httpd is PID 1 of the container, which ignores SIGTERM: stopped with SIGKILL at once
        node.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
        return got.stdout.decode(), pod.status(cid).exit_code

    recorded = serve_one(create(node, pod, "httpd", serve, record=f"of:httpd-{handler}.json"))
    assert recorded[0] == "hello from httpd\n"
    path = tmp_path / "recordings" / f"httpd-{handler}.json"
    names = set(load(path)["syscalls"][0]["names"])
    assert {"socket", "bind", "listen", "execve"} <= names and names & {"accept", "accept4"}
    assert serve_one(create(node, pod, "httpd-replay", serve, profile=path)) == recorded
    assert tracers() == []


def _pid(d: DaemonProcess, cid: str) -> int:
    info = d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info
    return int(json.loads(info["info"])["pid"])


@pytest.mark.parametrize("handler", HANDLERS)
def test_killed_daemon_leaves_the_container_running_untraced(node: DaemonProcess, handler: str,
                                                              tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(node, f"rec-kill-{handler}", handler, tmp_path / "logs", busybox_image)
    cid = create(node, pod, "sleeper", ["sh", "-c", "while true; do sleep 1; done"],
                 record=f"of:kill-{handler}.json")
    node.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    pid = _pid(node, cid)
    [tracer] = tracers()
    assert tracer_pid(pid) == tracer
    node.kill()
    deadline = time.monotonic() + 20
    while (tracers() or tracer_pid(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the tracer notices the closed pipe and detaches
    assert tracers() == [] and tracer_pid(pid) == 0
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("S", "R")
    recordings = tmp_path / "recordings"
    assert not (recordings / f"kill-{handler}.json").exists()
    partial = json.loads((recordings / f"kill-{handler}.json.partial").read_text())
    assert "execve" in partial["syscalls"][0]["names"]
    node.start()
    st = pod.status(cid)
    assert st.state == pb.CONTAINER_RUNNING
    assert pod.exec(cid, ["echo", "still here"]).stdout == b"still here\n"


def test_bad_annotations_are_refused(node: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(node, "rec-bad", "pyrunc", tmp_path / "logs", busybox_image)
    for value in ("of:../escape.json", "of:/etc/passwd", "of:a/b.json", "of:", "of:.hidden",
                  "profile.json", "of:x\x00y"):
        with pytest.raises(grpc.RpcError) as info:
            create(node, pod, "bad", ["true"], record=value)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, value
        assert ANNOTATION in str(info.value.details()) and "'bad'" in str(info.value.details())
    config = pb.PodSandboxConfig()
    config.CopyFrom(pod.config)
    config.metadata.name = config.metadata.uid = "rec-bad-pod"
    config.annotations[ANNOTATION] = "of:../../etc/cron.d/x"
    bad_pod = node.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config, runtime_handler="pyrunc"))
    with pytest.raises(grpc.RpcError) as info:
        node.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=bad_pod.pod_sandbox_id, config=pod.container_config("c", ["true"]),
            sandbox_config=config))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"pod 'rec-bad-pod': annotation {ANNOTATION}" in str(info.value.details())
    assert node.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    assert not (tmp_path / "recordings").exists() or list((tmp_path / "recordings").iterdir()) == []


def test_cli_records_through_the_daemon(node: DaemonProcess, tmp_path: Path, busybox_image: str) -> None:
    import subprocess
    import sys

    out = tmp_path / "cli" / "echo.json"
    argv = [sys.executable, "-m", "cri_shim", "seccomp", "record", "--config", str(node.config_path),
            "--socket", str(node.socket), "--root-dir", str(node.root_dir), "--state-dir",
            str(node.state_dir), "--handler", "pyrunc", "--output", str(out), "--", busybox_image,
            "sh", "-c", "echo recorded; exit 3"]
    done = subprocess.run(argv, capture_output=True, timeout=120)
    assert done.returncode == 3, done
    assert done.stdout == b"recorded\n"
    assert f"written to {out}".encode() in done.stderr
    assert "execve" in load(out)["syscalls"][0]["names"]
    # nothing of the recording is left in the daemon or its recorder directory
    assert node.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert list((tmp_path / "recordings").iterdir()) == []
    assert tracers() == []
