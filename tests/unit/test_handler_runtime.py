"""The handler runtime (conmon + OCI runtime) against a fake runtime binary: who builds which
command line, the global flags (--systemd-cgroup) on every one of them, ExecSync's time-out."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cri_shim import config
from cri_shim.containers.spec_gen import PodContext
from cri_shim.errors import DeadlineExceeded, FailedPrecondition
from cri_shim.runtime_handlers import HandlerRegistry
from cri_shim.runtimes.conmon_oci import ConmonOCIRuntime
from cri_shim.runtimes.handler_runtime import ContainerCreate
from oci.spec import Process

# Records its argv; `exec` runs the process's args as a shell command (its pid in --pid-file),
# `features` prints what FAKE_FEATURES holds or fails.
FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, subprocess, sys
    argv = sys.argv[1:]
    with open(os.environ["FAKE_RECORD"], "a") as rec:
        rec.write(json.dumps(argv) + "\\n")
    if "features" in argv:
        if not os.environ.get("FAKE_FEATURES"):
            sys.exit(1)
        print(os.environ["FAKE_FEATURES"])
    elif "exec" in argv:
        proc = json.load(open(argv[argv.index("--process") + 1]))
        child = subprocess.Popen(["sh", "-c", proc["args"][0]])
        for path in (argv[argv.index("--pid-file") + 1], os.environ["FAKE_RECORD"] + ".pid"):
            with open(path, "w") as f:
                f.write(str(child.pid))
        sys.exit(child.wait())
""")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    script = tmp_path / "fakerunc"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    return script, record


def registry(tmp_path: Path, binary: Path, driver: str = "cgroupfs") -> HandlerRegistry:
    cfg = config.from_dict({
        "state_dir": str(tmp_path / "state"), "root_dir": str(tmp_path / "root"), "cgroup_driver": driver,
        "conmon": "/fake/bin/conmon", "default_runtime": "fake",
        "runtimes": {"fake": {"binary": str(binary), "extra_args": ["--debug"]},
                     "gone": {"binary": "/nonexistent/runtime"}},
    })
    cfg.validate()
    return HandlerRegistry(cfg)


def _calls(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_conmon_runs_the_runtime_with_the_adapters_global_args(
        tmp_path: Path, fake: tuple[Path, Path], driver: str) -> None:
    binary, _ = fake
    rt = registry(tmp_path, binary, driver).runtime("")
    assert isinstance(rt, ConmonOCIRuntime)
    bundle = tmp_path / "bundle"
    argv = rt.conmon_args(ContainerCreate("c1", "web", bundle, "", PodContext(id="p1"))).argv()
    assert argv[0] == "/fake/bin/conmon" and argv[argv.index("-r") + 1] == str(binary)
    runtime_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--runtime-arg"]
    root = tmp_path / "state" / "runtimes" / "fake"
    systemd = ["--systemd-cgroup"] if driver == "systemd" else []
    assert runtime_args == [f"--root={root}", *systemd, "--debug"]
    assert f"k8s-file:{bundle / 'console.log'}" in argv
    assert argv[argv.index("--exit-dir") + 1] == str(tmp_path / "state" / "exits")


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_every_verb_gets_the_global_args(tmp_path: Path, fake: tuple[Path, Path], driver: str) -> None:
    binary, record = fake
    rt = registry(tmp_path, binary, driver).runtime("fake")
    bundle = tmp_path / "bundle"
    bundle.mkdir()

    async def scenario() -> None:
        await rt.start("c1")
        await rt.kill("c1", 9, all=True)
        await rt.delete("c1", force=True)
        result = await rt.exec_sync("c1", bundle, Process(args=["echo out; echo err >&2; exit 3"]), 10)
        assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)

    asyncio.run(scenario())
    calls = _calls(record)
    assert [next(a for a in c if a in ("start", "kill", "delete", "exec")) for c in calls] == [
        "start", "kill", "delete", "exec"]
    root = str(tmp_path / "state" / "runtimes" / "fake")
    for argv in calls:
        assert argv[:2] == ["--root", root]
        assert ("--systemd-cgroup" in argv) == (driver == "systemd")
        assert "--debug" in argv
    assert os.listdir(bundle) == []  # the exec's pid file went with it


def test_exec_sync_timeout_kills_the_exec_process(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    binary, record = fake
    rt = registry(tmp_path, binary).runtime("fake")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="'exec sleep 30' in container c1 timed out after 1s"):
        asyncio.run(rt.exec_sync("c1", bundle, Process(args=["exec sleep 30"]), 1))
    assert time.monotonic() - t0 < 10
    pid = int(Path(f"{record}.pid").read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the exec'd process outlived its time-out"
    assert os.listdir(bundle) == []


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_features_come_through_the_handler_runtime(
        tmp_path: Path, fake: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    binary, record = fake
    monkeypatch.setenv("FAKE_FEATURES", json.dumps({"mountOptions": ["rro"]}))
    handlers = registry(tmp_path, binary)
    asyncio.run(handlers.probe_features())
    assert handlers.get("fake").recursive_read_only_mounts
    assert "--root" in _calls(record)[0]
    monkeypatch.delenv("FAKE_FEATURES")  # a runtime without `features` has none
    asyncio.run(handlers.probe_features())
    assert handlers.get("fake").features == {}


def test_missing_binary_has_no_runtime(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    handlers = registry(tmp_path, fake[0])
    assert handlers.handlers["gone"].runtime is None
    with pytest.raises(FailedPrecondition, match="not found"):
        handlers.runtime("gone")
