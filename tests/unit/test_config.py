from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cri_shim import config
from cri_shim.errors import InvalidArgument


def test_defaults() -> None:
    c = config.load(None)
    assert (c.socket, c.state_dir, c.root_dir) == (
        "/run/cri-shim/cri-shim.sock", "/run/cri-shim", "/var/lib/cri-shim",
    )
    assert c.cgroup_driver == "cgroupfs" and c.default_runtime == "runc"
    assert set(c.runtimes) == {"runc", "crun", "pyrunc"}
    assert c.runtime_root("crun") == Path("/run/cri-shim/runtimes/crun")


def test_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('state_dir = "/a"\nroot_dir = "/b"\n[runtimes.kata]\nbinary = "kata-rt"\nroot = "/k"\n')
    c = config.load(str(f), {"root_dir": "/flag", "socket": None})
    assert (c.state_dir, c.root_dir, c.socket) == ("/a", "/flag", "/run/cri-shim/cri-shim.sock")
    assert c.runtimes["kata"].binary == "kata-rt" and "runc" in c.runtimes
    assert c.runtime_root("kata") == Path("/k")


def test_toml_round_trip() -> None:
    c = config.load(None)
    c.images.mirrors = {"docker.io": ["http://127.0.0.1:5000"]}
    c.images.servers = {"gcr.io": "http://127.0.0.1:5000"}
    again = config.from_dict(tomllib.loads(config.to_toml(c)))
    assert again.to_dict() == c.to_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1", "unknown key 'nope'"),
        ("[cni]\nconfdir = '/x'", "unknown key cni.'confdir'"),
        ("cgroup_driver = 'weird'", "cgroup_driver 'weird' is not one of"),
        ("default_runtime = 'ghost'", "default_runtime 'ghost' is not a configured handler"),
        ("[runtimes.x]\nbinary = ''", "runtime handler 'x': binary is empty"),
        ("state_dir = 'relative'", "state_dir must be an absolute path"),
        ("socket = [", "is not valid TOML"),
        ("[images]\nservers = {'gcr.io' = 'ftp://x'}", "images.servers['gcr.io'] must be an http"),
        ("[images]\nmirrors = {'gcr.io' = 'http://x'}", "images.mirrors['gcr.io'] must be a list"),
        ("[streaming]\nport = 70000", "streaming.port 70000 is not a port"),
        ("[streaming]\ntls_cert_file = '/c.pem'", "tls_cert_file and streaming.tls_key_file go together"),
        ("[streaming]\ntoken_ttl = 0", "streaming.token_ttl 0 must be positive"),
        ("[streaming]\nmax_connections = 0", "streaming.max_connections 0 must be at least 1"),
        ("[streaming]\nadress = 'x'", "unknown key streaming.'adress'"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(InvalidArgument) as exc:
        config.load(str(f))
    assert message in exc.value.message


def test_missing_file() -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        config.load("/nonexistent/cri-shim.toml")
