"""Issue 2: the serving daemon over its real socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from cri_shim import __version__
from cri_shim.criapi import api_pb2 as pb
from tests.e2e.daemon import CRI_SHIM, DaemonProcess

BRIDGE_CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "test-net",
    "plugins": [
        {"type": "bridge", "bridge": "cshtest0", "ipam": {"type": "host-local", "subnet": "10.255.3.0/24"}},
    ],
}


def _conditions(resp: pb.StatusResponse) -> dict[str, pb.RuntimeCondition]:
    return {c.type: c for c in resp.status.conditions}


def test_version(daemon: DaemonProcess) -> None:
    v = daemon.runtime.Version(pb.VersionRequest(version="v1"))
    assert (v.runtime_name, v.runtime_version, v.runtime_api_version) == ("cri-shim", __version__, "v1")


def test_socket_mode(daemon: DaemonProcess) -> None:
    st = daemon.socket.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_status_reports_missing_cni(daemon_factory, tmp_path: Path) -> None:
    empty = tmp_path / "net.d"
    empty.mkdir()
    d = daemon_factory(f'[cni]\nconf_dir = "{empty}"\n')
    conds = _conditions(d.runtime.Status(pb.StatusRequest()))
    assert conds["RuntimeReady"].status is True
    net = conds["NetworkReady"]
    assert net.status is False
    assert net.reason == "NetworkPluginNotReady"
    assert f"no CNI configuration file in {empty}" in net.message


def test_status_network_ready_with_conflist(daemon_factory, tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-test.conflist").write_text(json.dumps(BRIDGE_CONFLIST))
    d = daemon_factory(f'[cni]\nconf_dir = "{conf}"\nbin_dirs = ["/usr/lib/cni"]\n')
    conds = _conditions(d.runtime.Status(pb.StatusRequest()))
    assert conds["NetworkReady"].status is True, conds["NetworkReady"].message


def test_status_names_missing_plugin(daemon_factory, tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    bad = dict(BRIDGE_CONFLIST, plugins=[{"type": "no-such-plugin"}])
    (conf / "10-bad.conflist").write_text(json.dumps(bad))
    d = daemon_factory(f'[cni]\nconf_dir = "{conf}"\nbin_dirs = ["/usr/lib/cni"]\n')
    net = _conditions(d.runtime.Status(pb.StatusRequest()))["NetworkReady"]
    assert net.status is False and "no-such-plugin" in net.message


def test_status_missing_default_runtime_binary(daemon_factory) -> None:
    d = daemon_factory(
        'default_runtime = "ghost"\n[runtimes.ghost]\nbinary = "/nonexistent/ghost-runtime"\n'
    )
    resp = d.runtime.Status(pb.StatusRequest(verbose=True))
    rt = _conditions(resp)["RuntimeReady"]
    assert rt.status is False
    assert "/nonexistent/ghost-runtime" in rt.message and "ghost" in rt.message
    names = {h.name for h in resp.runtime_handlers}
    assert {"", "ghost", "runc", "crun", "pyrunc"} <= names
    info = json.loads(resp.info["runtimeHandlers"])
    assert info["ghost"]["available"] is False and info["runc"]["available"] is True


def test_status_verbose_has_config(daemon: DaemonProcess) -> None:
    resp = daemon.runtime.Status(pb.StatusRequest(verbose=True))
    cfg = json.loads(resp.info["config"])
    assert cfg["socket"] == str(daemon.socket)
    assert cfg["default_runtime"] == "runc"
    assert set(cfg["runtimes"]) >= {"runc", "crun", "pyrunc"}
    assert _conditions(resp)["RuntimeReady"].status is True


def test_status_plain_has_no_info(daemon: DaemonProcess) -> None:
    assert not daemon.runtime.Status(pb.StatusRequest()).info


def test_runtime_config(daemon: DaemonProcess) -> None:
    resp = daemon.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == pb.CGROUPFS


def test_rpcs_are_logged_with_duration(daemon: DaemonProcess) -> None:
    daemon.runtime.Version(pb.VersionRequest())
    with pytest.raises(grpc.RpcError):
        daemon.runtime.Attach(pb.AttachRequest())  # no container id
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = daemon.log()
        if "Version ok in" in log and "Attach -> INVALID_ARGUMENT in" in log:
            break
        time.sleep(0.05)
    assert "Version ok in" in log and " ms" in log
    assert "Attach -> INVALID_ARGUMENT in" in log


def test_second_instance_on_live_socket_exits_1(daemon: DaemonProcess, tmp_path: Path) -> None:
    other = tmp_path / "other"
    proc = subprocess.run(
        CRI_SHIM + ["serve", "--config", str(daemon.config_path), "--socket", str(daemon.socket),
                    "--state-dir", str(other / "state"), "--root-dir", str(other / "root")],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert f"another instance is already serving on {daemon.socket}" in proc.stderr
    # The first instance is untouched.
    assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "cri-shim"


def test_stale_socket_is_replaced(daemon_factory) -> None:
    d = daemon_factory(start=False)
    d.socket.parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(d.socket))
    stale.close()  # bound, never listened, now nobody behind it
    assert d.socket.exists()
    d.start()
    assert d.runtime.Version(pb.VersionRequest()).runtime_name == "cri-shim"


def test_non_socket_file_is_not_replaced(daemon_factory) -> None:
    d = daemon_factory(start=False)
    d.socket.write_text("precious")
    with pytest.raises(RuntimeError, match="is not a socket"):
        d.start(timeout=10)
    assert d.socket.read_text() == "precious"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_fast_and_removes_socket(daemon: DaemonProcess, sig: int) -> None:
    assert daemon.proc is not None
    proc = daemon.proc
    start = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=5)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"took {elapsed:.2f}s"
    assert proc.returncode == 0
    assert not daemon.socket.exists()


def test_config_command_prints_effective_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('log_level = "warning"\n[runtimes.fast]\nbinary = "/usr/bin/crun"\n')
    out = subprocess.run(
        CRI_SHIM + ["config", "--config", str(cfg), "--root-dir", "/srv/cri"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert 'log_level = "warning"' in out
    assert 'root_dir = "/srv/cri"' in out
    assert '[runtimes.fast]\nbinary = "/usr/bin/crun"' in out
    assert "[runtimes.runc]" in out


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("socket = [\n")
    proc = subprocess.run(CRI_SHIM + ["serve", "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"config file {cfg} is not valid TOML" in proc.stderr
    cfg.write_text("sockett = '/x'\n")
    proc = subprocess.run(CRI_SHIM + ["config", "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown key 'sockett'" in proc.stderr


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "cri_shim", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
    assert os.path.exists(Path(sys.executable).parent / "cri-shim")


def test_readiness_reaches_systemd_once_the_socket_answers(daemon_factory, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Type=notify: READY=1 comes after the socket answers, STOPPING=1 at SIGTERM."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    listener.bind(str(path))
    listener.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        d = daemon_factory(start=False)
        d.start()
        ready = listener.recv(4096).decode()
        assert "READY=1" in ready.splitlines() and f"MAINPID={d.proc.pid}" in ready.splitlines()
        assert d.runtime.Version(pb.VersionRequest()).runtime_name == "cri-shim"
        assert d.stop() == 0
        assert "STOPPING=1" in listener.recv(4096).decode().splitlines()
    finally:
        listener.close()


def test_json_logs_with_ids_and_sigusr1(daemon_factory) -> None:
    d = daemon_factory(start=False)
    d.extra_args = ["--log-level", "info", "--log-format", "json"]
    d.start()
    d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="ab" * 32))  # unknown: OK
    d.runtime.Version(pb.VersionRequest())  # a polling call: logged at debug only

    def lines() -> list[dict]:
        return [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]

    deadline = time.monotonic() + 5
    while not any("StopPodSandbox ok" in e["msg"] for e in lines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    raw = [line for line in d.log().splitlines() if line.strip()]
    assert raw and all(line.startswith("{") for line in raw), raw[:3]  # every line is an object
    stop = next(e for e in lines() if "StopPodSandbox ok" in e["msg"])
    assert stop["pod_id"] == "ab" * 32 and stop["level"] == "info" and stop["logger"] == "cri_shim.rpc"
    assert not any("Version ok" in e["msg"] for e in lines())
    assert d.proc is not None
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not any("log level now debug" in e["msg"] for e in lines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    d.runtime.Version(pb.VersionRequest())
    deadline = time.monotonic() + 5
    while not any("Version ok" in e["msg"] for e in lines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("Version ok" in e["msg"] and e["level"] == "debug" for e in lines())


def test_grpcio_server_is_the_fallback(daemon_factory, tmp_path: Path) -> None:
    """grpc_server = "grpcio": grpc-python's server answers the socket, with the same statuses,
    logging and streams as the built-in one; an unknown value is refused by name."""
    d = daemon_factory('grpc_server = "grpcio"\n')
    assert d.runtime.Version(pb.VersionRequest()).runtime_name == "cri-shim"
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o660
    with pytest.raises(grpc.RpcError) as e:
        d.runtime.Attach(pb.AttachRequest())  # no container id
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="nosuch"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "nosuch" in e.value.details()
    assert list(d.runtime.StreamContainers(pb.StreamContainersRequest())) == []
    assert list(d.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    deadline = time.monotonic() + 5
    while "ContainerStatus -> NOT_FOUND in" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ContainerStatus -> NOT_FOUND in" in d.log()
    cfg = tmp_path / "bad.toml"
    cfg.write_text('grpc_server = "h3"\n')
    proc = subprocess.run(CRI_SHIM + ["config", "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2 and "grpc_server 'h3' is not one of builtin, grpcio" in proc.stderr
