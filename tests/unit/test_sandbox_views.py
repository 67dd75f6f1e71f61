"""The Status view of a pod record is built once per state and addresses, rebuilt when they change."""

from __future__ import annotations

import dataclasses

from cri_shim.criapi import api_pb2 as pb
from cri_shim.sandboxes import views
from cri_shim.sandboxes.manager import Sandbox
from cri_shim.sandboxes.store import NOTREADY, READY, SandboxState
from tests.unit.test_store_records import sandbox_meta


def test_pod_status_view_is_reused_until_state_or_addresses_change() -> None:
    sb = Sandbox(meta=sandbox_meta(), status=SandboxState(state=READY))
    first, info = views.sandbox_status(sb, False)
    assert info == {} and first.state == pb.SANDBOX_READY and first.id == sb.meta.id
    assert views.sandbox_status(sb, False)[0] is first
    sb.status.ips = ["10.1.0.5", "fd00::5"]
    second = views.sandbox_status(sb, False)[0]
    assert second is not first
    assert (second.network.ip, [p.ip for p in second.network.additional_ips]) == ("10.1.0.5", ["fd00::5"])
    sb.status.state = NOTREADY
    third = views.sandbox_status(sb, False)[0]
    assert third.state == pb.SANDBOX_NOTREADY and third.network.ip == "10.1.0.5"
    sb.meta = dataclasses.replace(sb.meta, handler="crun")
    assert views.sandbox_status(sb, False)[0].runtime_handler == "crun"


def test_pod_list_entries_encode_what_the_message_would() -> None:
    pods = []
    for i in range(3):
        sb = Sandbox(meta=dataclasses.replace(sandbox_meta(), id=f"p{i}"), status=SandboxState(state=READY))
        pods.append(sb)
    joined = b"".join(views.sandbox_entry(sb) for sb in pods)
    expected = pb.ListPodSandboxResponse(items=[views.sandbox_pb(sb) for sb in pods])
    assert pb.ListPodSandboxResponse.FromString(joined) == expected
    pods[1].status.state = NOTREADY
    entry = pb.ListPodSandboxResponse.FromString(views.sandbox_entry(pods[1]))
    assert [p.state for p in entry.items] == [pb.SANDBOX_NOTREADY]
