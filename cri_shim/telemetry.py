"""The daemon's Prometheus metrics (prometheus-client), what operators graph for containerd
or CRI-O: RPCs by method and code with latency, pods and containers by state, image pulls,
OCI runtime operations per handler and verb, and what a restart recovered. One registry
per daemon; served by cri_shim.metrics_endpoint when `[metrics] address` is set."""

from __future__ import annotations

import bisect
import itertools
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


class _RPCCollector(Collector):
    """CRI calls by method and code, and their latency by method: plain counts the event loop
    adds to as each call is answered, turned into the counter and histogram families at
    scrape time. prometheus-client's own Counter and Histogram take a lock per
    value and walk the buckets in Python on each call."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], list[float]] = {}  # (method, code) -> [count, created]
        # method -> [count per bucket (the last is +Inf), sum, created]
        self.latency: dict[str, list[Any]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        c = self.calls.get((method, code))
        if c is None:
            c = self.calls[(method, code)] = [0, time.time()]
        c[0] += 1
        h = self.latency.get(method)
        if h is None:
            h = self.latency[method] = [[0] * (len(RPC_BUCKETS) + 1), 0.0, time.time()]
        h[0][bisect.bisect_left(RPC_BUCKETS, seconds)] += 1  # the first bound >= seconds
        h[1] += seconds

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("cri_shim_grpc_requests", "CRI calls answered, by method and gRPC code",
                                    labels=["method", "code"])
        for (method, code), (n, created) in sorted(self.calls.items()):
            calls.add_metric([method, code], n, created=created)
        yield calls
        latency = HistogramMetricFamily("cri_shim_grpc_request_duration_seconds",
                                        "CRI call latency, by method", labels=["method"])
        for method, (counts, total, created) in sorted(self.latency.items()):
            latency.add_metric([method], list(zip(_BOUNDS, itertools.accumulate(counts), strict=True)), total)
            latency.samples.append(Sample("cri_shim_grpc_request_duration_seconds_created",
                                          {"method": method}, created))
        yield latency


_BOUNDS = [floatToGoString(b) for b in RPC_BUCKETS] + ["+Inf"]  # the `le` labels


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._rpcs = _RPCCollector()
        r.register(self._rpcs)
        self.observe_rpc = self._rpcs.observe
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
