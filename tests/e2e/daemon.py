"""A real `cri-shim serve` process on a temporary socket, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from cri_shim.criapi import api_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
CRI_SHIM = [sys.executable, "-m", "cri_shim"]
# Multiplies the daemon's start-up allowance on slow machines (hack/vm-tests.py sets it for its
# emulated guest, where importing grpc alone takes seconds).
TIME_SCALE = float(os.environ.get("CRI_SHIM_TEST_TIME_SCALE", "1"))


class DaemonProcess:
    """Start/stop/restart one daemon; `runtime` and `images` are stubs bound to its socket."""

    def __init__(self, base: Path, config_text: str = "", extra_args: list[str] | None = None) -> None:
        self.base = base
        # sun_path holds 108 bytes; pytest's tmp paths can be longer, so the socket
        # gets a short directory of its own.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="crish-", dir="/tmp"))
        self.socket = self._socket_dir / "cri.sock"
        self.state_dir = base / "state"
        self.root_dir = base / "root"
        self.log_path = base / "daemon.log"
        self.config_path = base / "config.toml"
        self.config_path.write_text(config_text)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def argv(self) -> list[str]:
        return CRI_SHIM + [
            "serve", "--config", str(self.config_path), "--socket", str(self.socket),
            "--state-dir", str(self.state_dir), "--root-dir", str(self.root_dir),
            "--log-level", "debug", *self.extra_args,
        ]

    def start(self, timeout: float = 15.0) -> None:
        timeout *= TIME_SCALE
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The venv's bin holds pyrunc; a service manager would put it on PATH too.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, cwd=ROOT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cri-shim exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                # The kubelet's client accepts messages up to 16 MiB; so does ours.
                self.channel = grpc.insecure_channel(
                    f"unix:{self.socket}", options=[("grpc.max_receive_message_length", 16 << 20)])
                try:
                    grpc.channel_ready_future(self.channel).result(timeout=2)
                    return
                except grpc.FutureTimeoutError:
                    self.channel.close()
            time.sleep(0.05)
        raise RuntimeError(f"cri-shim did not come up in {timeout}s:\n{self.log()}")

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        assert self.channel is not None, "daemon not started"
        return api_pb2_grpc.RuntimeServiceStub(self.channel)

    @property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        assert self.channel is not None, "daemon not started"
        return api_pb2_grpc.ImageServiceStub(self.channel)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the daemon and wait; SIGKILL after `timeout`. Returns the exit status."""
        self._close_channel()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing gets to clean up."""
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()
