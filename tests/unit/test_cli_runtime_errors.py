"""Runtime log parsing and error classification, and CLIRuntime against a scripted fake runtime."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oci.cli_errors import classify, error_message, make_error, parse_log
from oci.cli_runtime import CLIRuntime
from oci.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    OCIRuntimeError,
    RuntimeFailure,
    WrongState,
)
from oci.runtime import Stdio
from oci.spec import Memory, Process, Resources

ROOT = "/run/test-root"

# (command, message as the runtime wrote it, expected class); messages copied from runc 1.1 and crun 1.8
CASES = [
    ("state", "container does not exist", ContainerNotFound),
    ("state", "error opening file `/run/test-root/c1/status`: No such file or directory", ContainerNotFound),
    ("delete", "cannot open directory '/run/test-root/c1': No such file or directory", ContainerNotFound),
    ("create", "runc create failed: container with given ID already exists", ContainerAlreadyExists),
    ("create", "container `c1` already exists", ContainerAlreadyExists),
    ("start", "cannot start an already running container", WrongState),
    ("start", "cannot start a container that has stopped", WrongState),
    ("start", "cannot open `/run/test-root/c1/exec.fifo`: No such file or directory", WrongState),
    ("delete", "cannot delete container c1 that is not stopped: running", WrongState),
    ("delete", "the container `c1` is not in `created` or `stopped` state", WrongState),
    ("kill", "container not running", WrongState),
    ("kill", "kill container: No such process", WrongState),
    ("start", "container `c1` is not running", WrongState),
    ("pause", "the container `c1` is not running", WrongState),
    ("resume", "container not paused", WrongState),
    ("exec", "cannot exec in a stopped container", WrongState),
    ("create", "runc create failed: namespace {\"bogus\" \"\"} does not exist", RuntimeFailure),
    ("create", "rootfs (/b/rootfs) does not exist", RuntimeFailure),
    ("create", "open `/b/rootfs`: No such file or directory", RuntimeFailure),
    ("features", "unknown command features", RuntimeFailure),
    ("update", "mkdir /sys/fs/cgroup/x: permission denied", RuntimeFailure),
]


@pytest.mark.parametrize("command,message,expected", CASES)
def test_classify(command: str, message: str, expected: type[OCIRuntimeError]) -> None:
    assert classify(message, command=command, container_id="c1", root=ROOT) is expected


def test_no_such_file_outside_the_state_dir_is_not_not_found() -> None:
    msg = "error opening file `/other/c1/status`: No such file or directory"
    assert classify(msg, command="state", container_id="c1", root=ROOT) is RuntimeFailure


def test_parse_log_runc_and_crun_lines() -> None:
    text = "\n".join([
        '{"level":"info","msg":"starting","time":"2026-01-01T00:00:00Z"}',
        '{"msg":"container `c1` already exists","level":"error","time":"2026-01-01T00:00:00.1Z"}',
        "not json at all",
        "",
        "[1, 2]",
    ])
    entries = parse_log(text)
    assert [(e.level, e.msg) for e in entries] == [
        ("info", "starting"), ("error", "container `c1` already exists"), ("unknown", "not json at all"),
        ("unknown", "[1, 2]")]


def test_error_message_prefers_log_errors_and_dedups() -> None:
    log = "\n".join(json.dumps({"level": lvl, "msg": m}) for lvl, m in [
        ("warning", "ignored"), ("error", "first"), ("error", "first"), ("fatal", "second")])
    assert error_message(log, "stderr text") == "first; second"
    assert error_message("", "line1\nline2\nline3\nline4\n") == "line2; line3; line4"
    assert error_message("plain text log", "") == "plain text log"


def test_make_error_carries_context() -> None:
    err = make_error(runtime="crun", command="start", exit_code=1, container_id="c1", root=ROOT,
                     log_text=json.dumps({"level": "error", "msg": "container `c1` is not running"}))
    assert isinstance(err, WrongState)
    assert err.runtime == "crun" and err.command == "start" and err.exit_code == 1
    assert err.runtime_message == "container `c1` is not running"
    assert "c1" in str(err) and "crun start" in str(err)
    empty = make_error(runtime="x", command="kill", exit_code=2, log_text="")
    assert isinstance(empty, RuntimeFailure) and "exited with status 2" in str(empty)


# --- CLIRuntime over a fake runtime -------------------------------------------------------------

FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, sys, subprocess
    argv = sys.argv[1:]
    opts = {{}}
    while argv and argv[0].startswith("--"):
        key = argv.pop(0)
        opts[key] = argv.pop(0)
    cmd, args = argv[0], argv[1:]
    with open(os.environ["FAKE_RECORD"], "a") as rec:
        rec.write(json.dumps({{"opts": opts, "cmd": cmd, "args": args}}) + "\\n")
    def fail(msg, code=1):
        with open(opts["--log"], "a") as log:
            log.write(json.dumps({{"level": "error", "msg": msg, "time": "now"}}) + "\\n")
        sys.exit(code)
    cid = args[-1] if args else ""
    if cid == "missing":
        fail("container does not exist")
    if cmd == "state":
        print(json.dumps({{"ociVersion": "1.0.2", "id": cid, "status": "running", "pid": 42,
                          "bundle": "/b", "rootfs": "/b/rootfs", "owner": ""}}))
    elif cmd == "list":
        print("null")
    elif cmd == "ps":
        print("[1, 2, 3]")
    elif cmd == "start":
        fail("cannot start an already running container")
    elif cmd == "create":
        # like a real container: a child that outlives us holding stdout
        subprocess.Popen(["sleep", "5"], stdin=subprocess.DEVNULL, start_new_session=True)
        print("container output")
    elif cmd == "exec":
        proc = json.load(open(args[args.index("--process") + 1]))
        if proc["args"][0] == "fail":
            fail("exec failed: no such file")
        sys.exit(int(proc["args"][1]))
    elif cmd == "update":
        res = json.load(open(args[args.index("--resources") + 1]))
        print(json.dumps(res), file=sys.stderr)
    elif cmd == "features":
        print(json.dumps({{"ociVersionMin": "1.0.0"}}))
""")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CLIRuntime, Path]:
    script = tmp_path / "fakerunc"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    return CLIRuntime(str(script), tmp_path / "root", name="fake"), record


def _calls(record: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_cli_runtime_commands(fake: tuple[CLIRuntime, Path], tmp_path: Path) -> None:
    rt, record = fake

    async def scenario() -> None:
        st = await rt.state("c1")
        assert (st.id, st.status, st.pid, st.bundle) == ("c1", "running", 42, "/b")
        assert st.extra["rootfs"] == "/b/rootfs"
        assert await rt.list() == []
        assert await rt.pids("c1") == [1, 2, 3]
        assert await rt.features() == {"ociVersionMin": "1.0.0"}
        with pytest.raises(ContainerNotFound) as info:
            await rt.state("missing")
        assert info.value.runtime == "fake" and info.value.container_id == "missing"
        with pytest.raises(WrongState):
            await rt.start("c1")
        await rt.kill("c1", 9, all=True)
        await rt.kill("c1", "SIGTERM")
        await rt.delete("c1", force=True)
        await rt.update("c1", Resources(memory=Memory(limit=1024)))

    asyncio.run(scenario())
    calls = _calls(record)
    root = str(tmp_path / "root")
    for call in calls:
        assert call["opts"]["--root"] == root and call["opts"]["--log-format"] == "json"
        assert call["opts"]["--log"].startswith(rt.log_dir) and not rt.log_dir.startswith(root + "/")
    by_cmd = {c["cmd"]: c["args"] for c in calls}
    assert by_cmd["list"] == ["--format", "json"] and by_cmd["ps"] == ["--format", "json", "c1"]
    assert by_cmd["delete"] == ["--force", "c1"]
    kills = [c["args"] for c in calls if c["cmd"] == "kill"]
    assert kills == [["--all", "c1", "9"], ["c1", "SIGTERM"]]
    # per-call log and temp files are cleaned up
    assert os.listdir(rt.log_dir) == []


def test_create_does_not_wait_for_inherited_stdio(fake: tuple[CLIRuntime, Path], tmp_path: Path) -> None:
    rt, record = fake
    out = tmp_path / "out.txt"
    t0 = time.monotonic()
    asyncio.run(rt.create("c1", tmp_path / "bundle", pid_file=tmp_path / "pid", console_socket="/tmp/cs.sock",
                          no_pivot=True, stdio=Stdio(stdout=out)))
    assert time.monotonic() - t0 < 3, "create waited for the container's stdout to close"
    assert out.read_text() == "container output\n"
    args = _calls(record)[0]["args"]
    assert args == ["--bundle", str(tmp_path / "bundle"), "--pid-file", str(tmp_path / "pid"),
                    "--console-socket", "/tmp/cs.sock", "--no-pivot", "c1"]


def test_exec_exit_code_versus_runtime_failure(fake: tuple[CLIRuntime, Path]) -> None:
    rt, _ = fake
    assert asyncio.run(rt.exec("c1", Process(args=["exit", "7"]))) == 7
    assert asyncio.run(rt.exec("c1", Process(args=["exit", "0"]), detach=True)) == 0
    with pytest.raises(RuntimeFailure, match="exec failed"):
        asyncio.run(rt.exec("c1", Process(args=["fail"])))


def test_runtime_args_for_a_monitor(tmp_path: Path) -> None:
    rt = CLIRuntime(sys.executable, tmp_path / "r", systemd_cgroup=True, global_args=["--debug"])
    assert rt.runtime_args() == [f"--root={tmp_path / 'r'}", "--systemd-cgroup", "--debug"]


def test_exec_piped_streams_and_reaps(fake: tuple[CLIRuntime, Path], tmp_path: Path) -> None:
    rt, record = fake

    async def scenario() -> int:
        async with rt.exec_piped("c1", Process(args=["exit", "3"]), pid_file=tmp_path / "pid") as proc:
            assert proc.stdout is not None and proc.stderr is not None
            return await proc.wait()

    assert asyncio.run(scenario()) == 3
    call = _calls(record)[0]
    # no --log: the runtime's own error goes to the caller's stderr
    assert call["opts"] == {"--root": str(tmp_path / "root")}
    assert call["cmd"] == "exec" and call["args"][-3:] == ["--pid-file", str(tmp_path / "pid"), "c1"]
    assert os.listdir(rt.log_dir) == []  # the process file is gone


RECORDER = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    with open(os.environ["FAKE_RECORD"], "a") as rec:
        rec.write(json.dumps(sys.argv[1:]) + "\\n")
    if "features" in sys.argv:
        print("{{}}")
""")


def test_systemd_cgroup_reaches_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "recorder"
    script.write_text(RECORDER.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    rt = CLIRuntime(str(script), tmp_path / "root", systemd_cgroup=True, global_args=["--debug"])

    async def scenario() -> None:
        await rt.create("c1", tmp_path / "b")
        await rt.start("c1")
        await rt.kill("c1", 15)
        await rt.features()
        await rt.exec("c1", Process(args=["true"]))
        async with rt.exec_piped("c1", Process(args=["true"]), pid_file=tmp_path / "pid") as proc:
            await proc.wait()
        await rt.delete("c1")

    asyncio.run(scenario())
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 7
    for argv in calls:
        verb = next(a for a in argv if a in ("create", "start", "kill", "features", "exec", "delete"))
        globals_ = argv[:argv.index(verb)]
        assert globals_[:2] == ["--root", str(tmp_path / "root")]
        assert globals_[-2:] == ["--systemd-cgroup", "--debug"]


def test_missing_binary() -> None:
    with pytest.raises(FileNotFoundError):
        CLIRuntime("definitely-not-a-runtime-binary", "/tmp/x")
