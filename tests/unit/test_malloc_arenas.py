"""The daemon caps glibc's malloc arenas, unless the operator chose a number."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Threads allocating at once, then glibc's own count of its arenas (malloc_stats, on stderr).
PROBE = """
import ctypes, sys, threading
from cri_shim import malloc_arenas
applied = malloc_arenas.limit() if sys.argv[1] == "limit" else None
def work():
    for _ in range(2000):
        bytearray(200_000)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(applied, flush=True)
ctypes.CDLL(None).malloc_stats()
"""


def probe(mode: str, **env: str) -> tuple[str, int]:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         cwd=ROOT, env={**base, **env}, check=True)
    return out.stdout.strip(), out.stderr.count("Arena ")


def test_arenas_capped_at_two() -> None:
    applied, arenas = probe("limit")
    assert applied == "True" and 1 <= arenas <= 2
    _, default = probe("default")
    assert default > 2  # the control: without the cap, eight threads spread over more arenas


def test_operator_setting_wins() -> None:
    applied, arenas = probe("limit", MALLOC_ARENA_MAX="4")
    assert applied == "False" and arenas <= 4
