"""Metrics: what the families report, the scrape endpoint, the observed handler runtime."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cri_shim.errors import InvalidArgument
from cri_shim.metrics_endpoint import MetricsEndpoint, parse_address
from cri_shim.runtimes.handler_runtime import DeferredCreate, PendingCreate
from cri_shim.runtimes.observed import ObservedRuntime
from cri_shim.telemetry import Telemetry


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_families_report_what_was_observed() -> None:
    t = Telemetry()
    t.observe_rpc("RunPodSandbox", "OK", 0.03)
    t.observe_rpc("RunPodSandbox", "OK", 0.02)
    t.observe_rpc("CreateContainer", "NOT_FOUND", 0.001)
    t.observe_pull(1.5, 1_500_000)
    t.observe_pull(0.2, None)
    t.observe_runtime("runc", "create", 0.04, False)
    t.observe_runtime("runc", "kill", 0.01, True)
    states = ["ready", "ready", "notready"]
    t.count_states("pods", lambda: iter(states))
    from prometheus_client import generate_latest
    got = samples(generate_latest(t.registry).decode())
    assert got[("cri_shim_grpc_requests_total", (("code", "OK"), ("method", "RunPodSandbox")))] == 2
    assert got[("cri_shim_grpc_requests_total", (("code", "NOT_FOUND"), ("method", "CreateContainer")))] == 1
    assert got[("cri_shim_grpc_request_duration_seconds_count", (("method", "RunPodSandbox"),))] == 2
    assert got[("cri_shim_image_pulls_total", (("result", "success"),))] == 1
    assert got[("cri_shim_image_pulls_total", (("result", "failure"),))] == 1
    assert got[("cri_shim_image_pull_bytes_total", ())] == 1_500_000
    runc_create = (("handler", "runc"), ("verb", "create"))
    assert got[("cri_shim_runtime_operation_duration_seconds_count", runc_create)] == 1
    assert got[("cri_shim_runtime_operation_errors_total", (("handler", "runc"), ("verb", "kill")))] == 1
    assert got[("cri_shim_pods", (("state", "ready"),))] == 2
    states.append("ready")  # counted at each scrape, not remembered
    got = samples(generate_latest(t.registry).decode())
    assert got[("cri_shim_pods", (("state", "ready"),))] == 3


@pytest.mark.parametrize(("address", "want"), [("127.0.0.1:9102", ("127.0.0.1", 9102)),
                                               ("[::1]:9102", ("::1", 9102)), (":9102", ("0.0.0.0", 9102))])
def test_addresses(address: str, want: tuple[str, int]) -> None:
    assert parse_address(address) == want


@pytest.mark.parametrize("address", ["9102", "localhost:http", "127.0.0.1:70000"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(InvalidArgument, match="metrics.address"):
        parse_address(address)


def test_endpoint_serves_metrics_only() -> None:
    async def main() -> None:
        t = Telemetry()
        t.observe_rpc("Version", "OK", 0.0001)
        endpoint = MetricsEndpoint(t, "127.0.0.1:0")
        await endpoint.start()
        base = f"http://127.0.0.1:{endpoint.port}"

        def get(path: str) -> tuple[int, str, str]:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    return r.status, r.headers["Content-Type"], r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, "", ""
        try:
            status, ctype, body = await asyncio.to_thread(get, "/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=")
            assert 'cri_shim_grpc_requests_total{code="OK",method="Version"} 1.0' in body
            assert (await asyncio.to_thread(get, "/"))[0] == 404
        finally:
            await endpoint.stop()
    asyncio.run(main())


class FakeRuntime:
    name = "fake"

    def __init__(self) -> None:
        self.extra = "passed through"

    async def start(self, container_id: str) -> None:
        if container_id == "bad":
            raise RuntimeError("no")

    async def create(self, request: Any) -> int:
        if request == "bad":
            raise RuntimeError("no")
        return 42

    async def begin_create(self, request: Any) -> PendingCreate:
        return DeferredCreate(self, request)  # type: ignore[arg-type]  # what HandlerRuntime's does

    async def features(self) -> dict[str, Any]:
        return {"ociVersionMin": "1.0.0"}


def test_observed_runtime_times_every_verb_and_counts_failures(tmp_path: Path) -> None:
    seen: list[tuple[str, str, bool]] = []
    rt = ObservedRuntime(FakeRuntime(), lambda h, v, s, failed: seen.append((h, v, failed)))  # type: ignore[arg-type]

    async def main() -> None:
        await rt.start("ok")
        with pytest.raises(RuntimeError):
            await rt.start("bad")
        assert await rt.features() == {"ociVersionMin": "1.0.0"}
    asyncio.run(main())
    assert seen == [("fake", "start", False), ("fake", "start", True), ("fake", "features", False)]
    assert rt.extra == "passed through"


def test_a_create_begun_early_is_observed_once() -> None:
    """begin_create and finish (or cancel) make one "create" observation, not two."""
    seen: list[tuple[str, str, bool]] = []
    rt = ObservedRuntime(FakeRuntime(), lambda h, v, s, failed: seen.append((h, v, failed)))  # type: ignore[arg-type]

    async def main() -> None:
        pending = await rt.begin_create("ok")  # type: ignore[arg-type]
        assert seen == []
        assert await pending.finish() == 42
        pending = await rt.begin_create("bad")  # type: ignore[arg-type]
        with pytest.raises(RuntimeError):
            await pending.finish()
        await (await rt.begin_create("ok")).cancel()  # type: ignore[arg-type]
    asyncio.run(main())
    assert seen == [("fake", "create", False), ("fake", "create", True), ("fake", "create", True)]


def test_rpc_families_match_prometheus_clients_own_counter_and_histogram() -> None:
    """The RPC metrics are plain counts turned into families at scrape time; the exposition
    is what prometheus-client's Counter and Histogram give for the same observations."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from cri_shim.telemetry import RPC_BUCKETS

    ref = CollectorRegistry()
    calls = Counter("cri_shim_grpc_requests", "CRI calls answered, by method and gRPC code",
                    ["method", "code"], registry=ref)
    latency = Histogram("cri_shim_grpc_request_duration_seconds", "CRI call latency, by method",
                        ["method"], buckets=RPC_BUCKETS, registry=ref)
    t = Telemetry()
    observed = [("Version", "OK", 0.0001), ("Version", "OK", 0.0005), ("RunPodSandbox", "OK", 0.07),
                ("RunPodSandbox", "OK", 61.0), ("ContainerStatus", "NOT_FOUND", 0.001),
                ("Version", "OK", 2.5)]
    for method, code, seconds in observed:
        t.observe_rpc(method, code, seconds)
        calls.labels(method, code).inc()
        latency.labels(method).observe(seconds)

    def rpc_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {k: v for k, v in samples(text).items()
                if "grpc_request" in k[0] and not k[0].endswith("_created")}

    ours = rpc_samples(generate_latest(t.registry).decode())
    assert ours == rpc_samples(generate_latest(ref).decode())
    bucket = ("cri_shim_grpc_request_duration_seconds_bucket", (("le", "0.0005"), ("method", "Version")))
    assert ours[bucket] == 2
    created = {k for k in samples(generate_latest(t.registry).decode()) if k[0].endswith("_created")}
    assert ("cri_shim_grpc_request_duration_seconds_created", (("method", "Version"),)) in created
