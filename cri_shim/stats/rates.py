"""usage_nano_cores from cumulative CPU counters, one previous sample per key."""

from __future__ import annotations


class CpuRates:
    """usage_nano_cores from the previous sample of each container or pod, like containerd (the
    kubelet's summary API reports it; a cumulative counter alone is not a rate)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def rate(self, key: str, now: int, cpu_ns: int) -> int | None:
        """CPU use in nanocores since the previous sample of key (None on the first)."""
        last = self._last.get(key)
        self._last[key] = (now, cpu_ns)
        if last is None or now <= last[0] or cpu_ns < last[1]:
            return None
        return (cpu_ns - last[1]) * 1_000_000_000 // (now - last[0])

    def forget(self, key: str) -> None:
        self._last.pop(key, None)
