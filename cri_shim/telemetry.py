"""The daemon's Prometheus metrics (prometheus-client), what operators graph for containerd
or CRI-O: RPCs by method and code with latency, pods and containers by state, image pulls,
OCI runtime operations per handler and verb, and what a restart recovered. One registry
per daemon; served by cri_shim.metrics_endpoint when `[metrics] address` is set."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# RPCs answer in microseconds (reads) to seconds (pulls, pod start)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

StatesSource = Callable[[], Iterable[str]]


class _StateCollector(Collector):
    """Objects by state, counted at scrape time from the managers (no bookkeeping to drift)."""

    def __init__(self) -> None:
        self.sources: dict[str, StatesSource] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for kind, source in self.sources.items():
            family = GaugeMetricFamily(f"cri_shim_{kind}", f"{kind.capitalize()} the daemon knows, by state",
                                       labels=["state"])
            for state, n in sorted(Tally(source()).items()):
                family.add_metric([state], n)
            yield family


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_requests = Counter("cri_shim_grpc_requests", "CRI calls answered, by method and gRPC code",
                                    ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("cri_shim_grpc_request_duration_seconds", "CRI call latency, by method",
                                     ["method"], buckets=RPC_BUCKETS, registry=r)
        self._rpc_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.pulls = Counter("cri_shim_image_pulls", "Image pulls, by result (success, failure)",
                             ["result"], registry=r)
        self.pull_bytes = Counter("cri_shim_image_pull_bytes", "Bytes of the images pulled (their layers)",
                                  registry=r)
        self.pull_seconds = Histogram("cri_shim_image_pull_duration_seconds", "Time a pull took, by result",
                                      ["result"], buckets=PULL_BUCKETS, registry=r)
        self.runtime_seconds = Histogram("cri_shim_runtime_operation_duration_seconds",
                                         "OCI runtime operations (create: under conmon), by handler, verb",
                                         ["handler", "verb"], buckets=RPC_BUCKETS, registry=r)
        self.runtime_errors = Counter("cri_shim_runtime_operation_errors",
                                      "OCI runtime or conmon operations that failed, by handler and verb",
                                      ["handler", "verb"], registry=r)
        self.recovered = Gauge("cri_shim_recovered_at_start", "Pods and containers found again at start",
                               ["kind"], registry=r)
        self._states = _StateCollector()
        r.register(self._states)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        # the labelled children, looked up once per (method, code): `labels()` takes a lock
        children = self._rpc_children.get((method, code))
        if children is None:
            children = self._rpc_children[(method, code)] = (
                self.rpc_requests.labels(method, code), self.rpc_seconds.labels(method))
        children[0].inc()
        children[1].observe(seconds)

    def observe_pull(self, seconds: float, size: int | None) -> None:
        """size None: the pull failed."""
        result = "failure" if size is None else "success"
        self.pulls.labels(result).inc()
        self.pull_seconds.labels(result).observe(seconds)
        if size:
            self.pull_bytes.inc(size)

    def observe_runtime(self, handler: str, verb: str, seconds: float, failed: bool) -> None:
        self.runtime_seconds.labels(handler, verb).observe(seconds)
        if failed:
            self.runtime_errors.labels(handler, verb).inc()

    def count_states(self, kind: str, source: StatesSource) -> None:
        """Report `cri_shim_<kind>{state}` from source() at each scrape."""
        self._states.sources[kind] = source
