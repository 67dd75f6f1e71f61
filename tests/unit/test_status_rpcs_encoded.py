"""PodSandboxStatus and ContainerStatus answer with the encoded views of the pod and its
containers (cri_shim.encoded): decoded, the answer is the message built field by field, and it
follows each state change."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

from cri_shim.containers import views as container_views
from cri_shim.containers.manager import Container
from cri_shim.containers.store import EXITED, RUNNING
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import Encoded, int_field, varint
from cri_shim.sandboxes import views as pod_views
from cri_shim.sandboxes.manager import Sandbox
from cri_shim.sandboxes.store import NOTREADY, READY, SandboxState
from cri_shim.server.container_rpcs import ContainerRPCs
from cri_shim.server.pod_rpcs import PodRPCs
from tests.unit.test_container_views import _container
from tests.unit.test_store_records import sandbox_meta


class Pods:
    """The part of SandboxManager the Status call uses, over real records and views."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def status(self, sandbox_id: str, verbose: bool = False) -> tuple[pb.PodSandboxStatus, dict[str, str]]:
        return pod_views.sandbox_status(self.sb, verbose)

    def status_body(self, sandbox_id: str) -> tuple[str, bytes]:
        return self.sb.meta.id, pod_views.status_body(self.sb)


class Containers:
    """The part of ContainerManager the Status calls use (no exit to report), over real views."""

    def __init__(self, cs: list[Container]) -> None:
        self.cs = {c.meta.id: c for c in cs}

    def pod_containers(self, pod_id: str) -> list[Container]:
        return [c for c in self.cs.values() if c.meta.pod_id == pod_id]

    def status(self, container_id: str, verbose: bool = False) -> tuple[pb.ContainerStatus, dict[str, str]]:
        return container_views.container_status(self.cs[container_id], verbose)

    def status_body(self, container_id: str) -> bytes:
        return container_views.status_body(self.cs[container_id])

    def pod_status_bodies(self, pod_id: str) -> list[bytes]:
        return [container_views.status_body(c) for c in self.pod_containers(pod_id)]


def _rpcs(sb: Sandbox, cs: list[Container]) -> tuple[PodRPCs, ContainerRPCs]:
    services = SimpleNamespace(sandboxes=Pods(sb), containers=Containers(cs))
    pods, ctrs = PodRPCs(), ContainerRPCs()
    pods.services = ctrs.services = services  # type: ignore[assignment]
    return pods, ctrs


def _world() -> tuple[Sandbox, list[Container]]:
    sb = Sandbox(meta=dataclasses.replace(sandbox_meta(), id="p1"), status=SandboxState(state=READY))
    sb.status.ips = ["10.1.0.5", "fd00::5"]
    a = _container()
    b = _container()
    b.meta = dataclasses.replace(b.meta, id="c2", name="d")
    other = _container()
    other.meta = dataclasses.replace(other.meta, id="c3", pod_id="p2")
    return sb, [a, b, other]


def _expected(sb: Sandbox, cs: list[Container]) -> pb.PodSandboxStatusResponse:
    return pb.PodSandboxStatusResponse(
        status=pod_views.sandbox_status(sb, False)[0],
        containers_statuses=[container_views.container_status(c, False)[0]
                             for c in cs if c.meta.pod_id == sb.meta.id])


def test_pod_status_answer_decodes_to_the_message() -> None:
    sb, cs = _world()
    pods, _ = _rpcs(sb, cs)
    before = time.time_ns()
    got = pods.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="p1"), None)
    assert isinstance(got, Encoded)
    decoded = pb.PodSandboxStatusResponse.FromString(got.SerializeToString())
    assert before <= decoded.timestamp <= time.time_ns()
    assert [s.id for s in decoded.containers_statuses] == ["c1", "c2"]
    assert decoded.status.network.ip == "10.1.0.5" and decoded.status.state == pb.SANDBOX_READY
    decoded.ClearField("timestamp")
    assert decoded == _expected(sb, cs)
    # a change of state, of addresses or of a container's state is in the next answer
    sb.status.state = NOTREADY
    sb.status.ips = []
    cs[1].status.state = RUNNING
    cs[1].status.started_at = 5
    again = pb.PodSandboxStatusResponse.FromString(
        pods.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="p1"), None).SerializeToString())
    assert again.status.state == pb.SANDBOX_NOTREADY and not again.status.network.ip
    assert again.containers_statuses[1].state == pb.CONTAINER_RUNNING
    again.ClearField("timestamp")
    assert again == _expected(sb, cs)


def test_verbose_pod_status_is_the_message_with_its_info() -> None:
    sb, cs = _world()
    pods, _ = _rpcs(sb, cs)
    got = pods.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="p1", verbose=True), None)
    assert isinstance(got, pb.PodSandboxStatusResponse)
    assert "info" in got.info and got.timestamp > 0
    got.ClearField("timestamp")
    got.ClearField("info")
    assert got == _expected(sb, cs)


def test_container_status_answer_decodes_to_the_message() -> None:
    sb, cs = _world()
    _, ctrs = _rpcs(sb, cs)
    c = cs[0]
    for state, code in ((RUNNING, 0), (EXITED, 137)):
        c.status.state, c.status.exit_code = state, code
        got = ctrs.ContainerStatus(pb.ContainerStatusRequest(container_id="c1"), None)
        assert isinstance(got, Encoded)
        expected = pb.ContainerStatusResponse(status=container_views.container_status(c, False)[0])
        assert pb.ContainerStatusResponse.FromString(got.SerializeToString()) == expected
        assert expected.status.exit_code == code
    verbose = ctrs.ContainerStatus(pb.ContainerStatusRequest(container_id="c1", verbose=True), None)
    assert isinstance(verbose, pb.ContainerStatusResponse) and "info" in verbose.info


def test_int_field_is_the_varint_encoding() -> None:
    msg = pb.PodSandboxStatusResponse(timestamp=1_764_000_000_123_456_789)
    assert int_field(4, msg.timestamp) == msg.SerializeToString()
    assert int_field(1, 0) == b"\x08" + varint(0)
