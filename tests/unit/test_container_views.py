"""The Status view of a container record is built once per state, and rebuilt when it changes."""

from __future__ import annotations

import dataclasses

from cri_shim.containers import views
from cri_shim.containers.manager import Container
from cri_shim.containers.store import CREATED, EXITED, RUNNING, ContainerMeta, ContainerState
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import Encoded, varint


def _container() -> Container:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c", attempt=2),
                             labels={"app": "web"}, annotations={"a": "1"},
                             mounts=[pb.Mount(container_path="/data", host_path="/srv/data")])
    meta = ContainerMeta(id="c1", pod_id="p1", name="c", attempt=2, config=cfg.SerializeToString(),
                         image_ref="busybox", image_id="sha256:a", image_repo_ref="", handler="runc",
                         bundle="/b", log_path="/l", created_at=1, stop_signal="SIGUSR1")
    return Container(meta=meta, status=ContainerState(state=CREATED))


def test_status_view_is_reused_while_nothing_changes() -> None:
    c = _container()
    first, info = views.container_status(c, False)
    assert info == {}
    assert (first.id, first.state, first.metadata.attempt) == ("c1", pb.CONTAINER_CREATED, 2)
    assert dict(first.labels) == {"app": "web"} and first.mounts[0].host_path == "/srv/data"
    assert first.stop_signal == pb.SIGUSR1
    again, _ = views.container_status(c, False)
    assert again is first


def test_status_view_follows_every_field_it_shows() -> None:
    c = _container()
    seen = [views.container_status(c, False)[0]]
    c.status.state = RUNNING
    c.status.started_at = 5
    seen.append(views.container_status(c, False)[0])
    assert (seen[-1].state, seen[-1].started_at) == (pb.CONTAINER_RUNNING, 5)
    res = pb.LinuxContainerResources(cpu_shares=512)
    c.status.resources = res.SerializeToString()
    seen.append(views.container_status(c, False)[0])
    assert seen[-1].resources.linux.cpu_shares == 512
    c.status = dataclasses.replace(c.status, state=EXITED, finished_at=9, exit_code=3, reason="Error",
                                   message="boom")
    seen.append(views.container_status(c, False)[0])
    last = seen[-1]
    assert (last.state, last.finished_at, last.exit_code, last.reason, last.message) == (
        pb.CONTAINER_EXITED, 9, 3, "Error", "boom")
    # new metadata (a record read back, say) is a new view too
    c.meta = dataclasses.replace(c.meta, log_path="/other")
    seen.append(views.container_status(c, False)[0])
    assert seen[-1].log_path == "/other"
    assert len({id(s) for s in seen}) == len(seen), "a change was answered with an old view"


def test_a_template_built_ahead_is_what_the_status_view_uses() -> None:
    c = _container()
    views.status_template(c)
    assert c.status_template is not None and c.status_template[0] is c.meta
    template = c.status_template[1]
    c.status.state = RUNNING
    st, _ = views.container_status(c, False)
    assert st is not template and st.state == pb.CONTAINER_RUNNING
    assert template.state == pb.CONTAINER_CREATED, "the template was written to"  # the default: unset
    assert dict(st.annotations) == {"a": "1"} and st.metadata.name == "c"


def test_list_entries_encode_what_the_message_would() -> None:
    """Joined entries decode to the ListContainersResponse the messages make, whatever their size
    (a length over 127 takes a two-byte varint), and an entry follows its container's state."""
    cs = []
    for i, labels in enumerate(({}, {"k": "v" * 200}, {"big": "x" * 70_000})):
        c = _container()
        c.meta = dataclasses.replace(c.meta, id=f"c{i}")
        c.config.labels.update(labels)  # the decoded config is what the views read
        cs.append(c)
    joined = b"".join(views.container_entry(c) for c in cs)
    expected = pb.ListContainersResponse(containers=[views.container_pb(c) for c in cs])
    # (equal as messages: protobuf leaves the order of map entries on the wire open)
    assert pb.ListContainersResponse.FromString(joined) == expected
    first = views.container_entry(cs[0])
    assert views.container_entry(cs[0]) is first
    cs[0].status.state = RUNNING
    running = views.container_entry(cs[0])
    assert running != first
    assert pb.ListContainersResponse.FromString(running).containers[0].state == pb.CONTAINER_RUNNING


def test_encoded_stands_in_for_its_message() -> None:
    msg = pb.ListContainersResponse(containers=[pb.Container(id="a"), pb.Container(id="b" * 300)])
    enc = Encoded(pb.ListContainersResponse, msg.SerializeToString())
    assert enc.SerializeToString() == msg.SerializeToString()
    assert enc.decoded() == msg
    assert [varint(n) for n in (0, 1, 127, 128, 300, 2**21)] == [
        b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\x80\x80\x80\x01"]


def test_verbose_info_carries_the_spec_as_written(tmp_path) -> None:
    import json

    c = _container()
    c.meta = dataclasses.replace(c.meta, bundle=str(tmp_path), cgroups_path="/kubepods/c1")
    c.status.pid = 42
    # after a restart: read back from the bundle, checked, then kept
    spec = {"ociVersion": "1.1.0", "process": {"args": ["top"], "env": ["A=«b»"]}}
    (tmp_path / "config.json").write_text(json.dumps(spec, indent=1))
    _, info = views.container_status(c, True)
    assert json.loads(info["info"]) == {"sandboxID": "p1", "pid": 42, "runtimeHandler": "runc",
                                        "bundle": str(tmp_path), "cgroupsPath": "/kubepods/c1",
                                        "runtimeSpec": spec}
    (tmp_path / "config.json").unlink()
    assert json.loads(views.container_status(c, True)[1]["info"])["runtimeSpec"] == spec
    # a spec that cannot be read or is not JSON is null, never an info that is not JSON
    for broken in (None, '{"ociVersion": "1.1'):
        d = _container()
        d.meta = dataclasses.replace(d.meta, bundle=str(tmp_path))
        if broken is not None:
            (tmp_path / "config.json").write_text(broken)
        assert json.loads(views.container_status(d, True)[1]["info"])["runtimeSpec"] is None
    # as CreateContainer leaves it
    e = _container()
    e.spec_json = json.dumps(spec, indent=1)
    assert json.loads(views.verbose_info(e))["runtimeSpec"] == spec
