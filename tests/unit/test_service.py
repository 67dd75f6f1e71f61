"""Running as a systemd service: the readiness protocol, and what `cri-shim install` writes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from cri_shim import sd_notify
from cri_shim.cli import main
from cri_shim.config import load
from cri_shim.install import CONFIG_PATH, CRICTL_PATH, UNIT_PATH, install, unit_text


def test_notify_socket_addresses() -> None:
    assert sd_notify.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert sd_notify.socket_address("@/org/systemd/notify") == b"\0/org/systemd/notify"
    assert sd_notify.socket_address("") is None
    assert sd_notify.socket_address("vsock:2:1234") is None
    assert sd_notify.message(READY=1, STATUS="serving on /x") == b"READY=1\nSTATUS=serving on /x"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        sd_notify.message(STATUS="two\nlines")


def test_notify_reaches_a_listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.notify(READY=1, MAINPID=42)
        assert listener.recv(4096) == b"READY=1\nMAINPID=42"
    # abstract namespace, as systemd itself uses
    name = f"@cri-shim-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0" + name[1:].encode())
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert sd_notify.notify(STOPPING=1)
        assert listener.recv(4096) == b"STOPPING=1"


def test_notify_without_systemd_or_listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify.notify(READY=1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not sd_notify.notify(READY=1)  # logged, never raised


def test_install_into_a_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe = shutil.which("cri-shim") or "/usr/bin/true"
    assert main(["install", "--root", str(tmp_path), "--executable", exe]) == 0
    unit = (tmp_path / UNIT_PATH).read_text()
    for line in ("Type=notify", "KillMode=process", "Delegate=yes", "Restart=on-failure",
                 f"ExecStart={exe} serve --config /etc/cri-shim/config.toml", "LimitNOFILE=1048576"):
        assert line in unit.splitlines(), line
    config = load(str(tmp_path / CONFIG_PATH))  # a valid configuration: the defaults
    assert config.socket == "/run/cri-shim/cri-shim.sock"
    assert (tmp_path / CRICTL_PATH).read_text().startswith("runtime-endpoint: unix:///run/cri-shim/cri-shim.sock\n")
    for rel in (UNIT_PATH, CONFIG_PATH, CRICTL_PATH):
        assert (tmp_path / rel).stat().st_mode & 0o777 == 0o644
    # an operator's configuration survives a reinstall; the unit is ours and is replaced
    (tmp_path / CONFIG_PATH).write_text('socket = "/run/mine.sock"\n')
    results = install(tmp_path, exe)
    assert [r.written for r in results] == [True, False, False]
    assert (tmp_path / CONFIG_PATH).read_text() == 'socket = "/run/mine.sock"\n'
    assert "wrote" in capsys.readouterr().out


def test_install_refuses_a_relative_executable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", "--root", str(tmp_path), "--executable", "cri-shim"]) == 2
    assert "absolute path" in capsys.readouterr().err
    assert not (tmp_path / UNIT_PATH).exists()


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: hack/setup-host.sh installs Debian's systemd package"
    exe = shutil.which("cri-shim") or "/usr/bin/true"
    unit = tmp_path / "cri-shim.service"
    unit.write_text(unit_text(exe))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    # verify only warns (status 0) about directives it cannot parse: its output must be empty
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), out
    bad = tmp_path / "bad.service"
    bad.write_text(unit_text(exe).replace("Type=notify", "Type=bogus"))
    out = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True)
    assert "bogus" in out.stderr  # the check does look at the file
