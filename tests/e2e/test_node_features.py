"""Issue 16 items 2 and 3 through the socket on every handler: CDI devices, stop signals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import BACKENDS, Pod, serving_pods

pytestmark = pytest.mark.root


@pytest.fixture
def cdi_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cdi"
    d.mkdir()
    share = tmp_path / "widget-share"
    share.mkdir()
    (share / "firmware.txt").write_text("widget firmware 1.2\n")
    (d / "widget.json").write_text(json.dumps({
        "cdiVersion": "0.6.0", "kind": "vendor.example/widget",
        "containerEdits": {"env": ["WIDGET_DRIVER=loaded"]},
        "devices": [{"name": "w0", "containerEdits": {
            "deviceNodes": [{"path": "/dev/widget0", "hostPath": "/dev/null"}, {"path": "/dev/zero"}],
            "mounts": [{"hostPath": str(share), "containerPath": "/opt/widget", "options": ["ro", "rbind"]}],
            "env": ["WIDGET=w0"]}}]}))
    return d


@pytest.fixture
def node(daemon_factory, test_network: PodNetwork, busybox_image: str, cdi_dir: Path):  # noqa: F811
    yield from serving_pods(daemon_factory, test_network, busybox_image, f'cdi_spec_dirs = ["{cdi_dir}"]\n')


def create(d: DaemonProcess, pod: Pod, cfg: pb.ContainerConfig) -> str:
    return d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id


@pytest.mark.parametrize("handler", BACKENDS)
def test_cdi_devices(node: DaemonProcess, handler: str, tmp_path: Path, busybox_image: str) -> None:
    pod = Pod(node, f"cdi-{handler}", handler, tmp_path / "logs", busybox_image)
    cfg = pod.container_config("gpu", ["sleep", "3600"])
    cfg.CDI_devices.add(name="vendor.example/widget=w0")
    cid = create(node, pod, cfg)
    node.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    null = os.stat("/dev/null")
    out = pod.exec(cid, ["sh", "-c", "stat -c '%t %T' /dev/widget0; echo $WIDGET $WIDGET_DRIVER; "
                                     "cat /opt/widget/firmware.txt; head -c 3 /dev/zero | od -An -tx1; "
                                     "echo x > /dev/widget0 && echo writable"])
    assert out.exit_code == 0, out
    lines = out.stdout.decode().split("\n")
    assert lines[0] == f"{os.major(null.st_rdev):x} {os.minor(null.st_rdev):x}"
    assert lines[1] == "w0 loaded" and lines[2] == "widget firmware 1.2"
    assert lines[3].split() == ["00", "00", "00"] and lines[4] == "writable"
    # an unknown device: refused up front, naming it, and nothing is left behind
    bad = pod.container_config("nope", ["true"])
    bad.CDI_devices.add(name="vendor.example/widget=w9")
    with pytest.raises(grpc.RpcError) as info:
        create(node, pod, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "vendor.example/widget=w9" in str(info.value.details())
    names = [c.metadata.name for c in node.runtime.ListContainers(pb.ListContainersRequest()).containers]
    assert "nope" not in names
    bad.CDI_devices[0].name = "not-a-cdi-name"
    with pytest.raises(grpc.RpcError) as info:
        create(node, pod, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "qualified name" in str(info.value.details())


@pytest.mark.parametrize("handler", BACKENDS)
def test_stop_signal_overrides_the_image(node: DaemonProcess, handler: str, tmp_path: Path,
                                         busybox_image: str) -> None:
    pod = Pod(node, f"sig-{handler}", handler, tmp_path / "logs", busybox_image)
    script = "trap 'echo got-usr1; exit 7' USR1; trap '' TERM; echo ready; while true; do sleep 0.1; done"
    cfg = pod.container_config("usr1", ["sh", "-c", script])
    cfg.stop_signal = pb.SIGUSR1
    cid = create(node, pod, cfg)
    plain = pod.run("plain", ["sleep", "3600"])
    node.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    pod.wait_state(cid, pb.CONTAINER_RUNNING)
    assert pod.status(cid).stop_signal == pb.SIGUSR1
    assert pod.status(plain).stop_signal == pb.SIGTERM  # busybox's image names none
    log = Path(pod.status(cid).log_path)
    deadline = time.monotonic() + 20
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the traps are set once it says so
    t0 = time.monotonic()
    node.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=20))
    st = pod.status(cid)
    assert st.exit_code == 7 and time.monotonic() - t0 < 10, st  # USR1, not the KILL at the timeout
    assert "got-usr1" in Path(st.log_path).read_text()
