"""Issue 16 item 4: CRI list streaming (KEP-5825) through the socket: the same filters as the
unary calls, in batches under gRPC's 16 MiB limit, when the unary answer would exceed it."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import BACKENDS, Pod

pytestmark = pytest.mark.root

BIG = 256 << 10  # the kubelet's limit for a pod's annotations in all


@pytest.mark.parametrize("handler", BACKENDS)
def test_streams_list_what_the_unary_calls_list(cri: DaemonProcess, handler: str, tmp_path: Path,
                                                test_network: PodNetwork, busybox_image: str) -> None:  # noqa: F811
    pod = Pod(cri, f"list-{handler}", handler, tmp_path / "logs", busybox_image)
    other = Pod(cri, f"other-{handler}", handler, tmp_path / "logs2", busybox_image)
    running = pod.run("running", ["sleep", "3600"], labels={"tier": "web"})
    created = pod.create("created", ["true"], labels={"tier": "db"})
    pod.wait_state(running, pb.CONTAINER_RUNNING)
    rt = cri.runtime

    def streamed_containers(f: pb.ContainerFilter | None = None) -> list[str]:
        req = pb.StreamContainersRequest(filter=f) if f else pb.StreamContainersRequest()
        return sorted(c.id for r in rt.StreamContainers(req) for c in r.containers)

    assert streamed_containers() == sorted({running, created})
    web = pb.ContainerFilter(label_selector={"tier": "web"})
    unary = rt.ListContainers(pb.ListContainersRequest(filter=web)).containers
    assert streamed_containers(web) == [c.id for c in unary] == [running]
    assert streamed_containers(pb.ContainerFilter(pod_sandbox_id=other.id)) == []
    pods = sorted(p.id for r in rt.StreamPodSandboxes(pb.StreamPodSandboxesRequest())
                  for p in r.pod_sandboxes)
    assert pods == sorted({pod.id, other.id})
    only = pb.PodSandboxFilter(id=other.id)
    assert [p.id for r in rt.StreamPodSandboxes(pb.StreamPodSandboxesRequest(filter=only))
            for p in r.pod_sandboxes] == [other.id]
    stats = [s.attributes.id for r in rt.StreamContainerStats(pb.StreamContainerStatsRequest())
             for s in r.container_stats]
    assert running in stats
    pod_stats = [s.attributes.id for r in rt.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest())
                 for s in r.pod_sandbox_stats]
    assert pod.id in pod_stats
    metrics = [m.pod_sandbox_id for r in rt.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest())
               for m in r.pod_sandbox_metrics]
    assert metrics == [m.pod_sandbox_id for m in
                       rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics]
    images = [i.id for r in cri.images.StreamImages(pb.StreamImagesRequest()) for i in r.images]
    assert images == [i.id for i in cri.images.ListImages(pb.ListImagesRequest()).images] and images
    wanted = pb.ImageFilter(image=pb.ImageSpec(image=busybox_image))
    one = cri.images.StreamImages(pb.StreamImagesRequest(filter=wanted))
    assert len([i for r in one for i in r.images]) == 1


def test_stream_lists_what_no_unary_answer_can_hold(
        cri: DaemonProcess, tmp_path: Path, test_network: PodNetwork,  # noqa: F811
        busybox_image: str, capsys: pytest.CaptureFixture[str]) -> None:
    pod = Pod(cri, "crowded", "runc", tmp_path / "logs", busybox_image)
    count = 80  # 80 x 256 KiB of annotations: 20 MiB, past the 16 MiB a message may hold
    ids = set()
    for i in range(count):
        cfg = pod.container_config(f"c{i}", ["true"])
        cfg.annotations["example.com/blob"] = "x" * (BIG - 100)
        ids.add(cri.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)).container_id)
    with pytest.raises(grpc.RpcError) as info:
        cri.runtime.ListContainers(pb.ListContainersRequest())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    t0 = time.monotonic()
    responses = list(cri.runtime.StreamContainers(pb.StreamContainersRequest()))
    elapsed = time.monotonic() - t0
    got = [c for r in responses for c in r.containers]
    assert {c.id for c in got} == ids and len(got) == count
    assert all(len(c.annotations["example.com/blob"]) == BIG - 100 for c in got)
    sizes = [r.ByteSize() for r in responses]
    assert max(sizes) < 8 << 20 and len(responses) > 1
    for cid in ids:  # the fixture's clean-up lists with the unary call: make it fit again
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    with capsys.disabled():
        print(f"\nlist streaming: {count} containers, unary answer {sum(sizes) / 2**20:.1f} MiB "
              f"(refused), stream of {len(responses)} messages (largest {max(sizes) / 2**20:.1f} MiB) "
              f"in {elapsed * 1000:.0f} ms")
