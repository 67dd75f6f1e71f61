"""A private CNI network for one test: own bridge, subnet and IPAM directory."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cni import write_bridge_network

# Subnets start at a pid-derived offset so two test runs at once rarely pick the same one.
_counter = iter(range(10 + os.getpid() % 120, 250))


@dataclass
class PodNetwork:
    conf_dir: Path
    ipam_dir: Path
    cache_dir: Path
    bridge: str
    subnet: str

    def config_toml(self) -> str:
        return (f'[cni]\nconf_dir = "{self.conf_dir}"\nbin_dirs = ["/usr/lib/cni"]\n'
                f'cache_dir = "{self.cache_dir}"\n')

    def allocated_ips(self) -> list[str]:
        d = self.ipam_dir / "csh-test"
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit())


@pytest.fixture
def test_network(tmp_path: Path) -> Iterator[PodNetwork]:
    n = next(_counter)
    bridge = f"csh{uuid.uuid4().hex[:8]}"
    net = PodNetwork(tmp_path / "net.d", tmp_path / "ipam", tmp_path / "cni-cache", bridge,
                     f"10.254.{n}.0/24")
    write_bridge_network(net.conf_dir, "csh-test", bridge, net.subnet, net.ipam_dir, portmap=True,
                         file_name="10-test.conflist")
    yield net
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
