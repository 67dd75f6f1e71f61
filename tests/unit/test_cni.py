"""The pure parts of CNI: config discovery, plugin environment and stdin, results, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument
from cri_shim.network.cni import CNIError, PodNetworkRequest, parse_output, plugin_env, plugin_stdin, pod_ips
from cri_shim.network.cni_config import NetworkConfig, NoNetworkConfig, load_default_network, parse_config
from cri_shim.sandboxes.pod_files import hosts_file, resolv_conf

NET = NetworkConfig(Path("x"), "podnet", "1.0.0", [
    {"type": "bridge", "bridge": "b0"},
    {"type": "portmap", "capabilities": {"portMappings": True}},
], {})
REQ = PodNetworkRequest("abc", "/run/ns/net", "web", "default", "u1",
                        [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}])


def test_env() -> None:
    env = plugin_env("ADD", REQ, ["/usr/lib/cni", "/opt/cni/bin"])
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_NETNS"] == "/run/ns/net"
    assert env["CNI_PATH"] == "/usr/lib/cni:/opt/cni/bin" and env["CNI_IFNAME"] == "eth0"
    assert "K8S_POD_NAME=web" in env["CNI_ARGS"] and "K8S_POD_INFRA_CONTAINER_ID=abc" in env["CNI_ARGS"]


def test_stdin_runtime_config_only_for_capable_plugins() -> None:
    bridge = json.loads(plugin_stdin(NET, NET.plugins[0], REQ, None))
    assert bridge["name"] == "podnet" and bridge["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge
    portmap = json.loads(plugin_stdin(NET, NET.plugins[1], REQ, {"ips": []}))
    assert portmap["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert portmap["prevResult"] == {"ips": []}


def test_parse_error_result() -> None:
    with pytest.raises(CNIError, match=r"bridge ADD failed \(code 11\): no IP addresses available"):
        parse_output("bridge", "ADD", 1, b'{"code": 11, "msg": "no IP addresses available"}', b"")
    with pytest.raises(CNIError, match="segfault"):
        parse_output("bridge", "ADD", 2, b"", b"segfault")
    assert parse_output("bridge", "DEL", 0, b"", b"") == {}


def test_pod_ips_from_sandbox_interface_v4_first() -> None:
    result = {
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/ns"}],
        "ips": [{"address": "fd00::5/64", "interface": 2}, {"address": "10.1.0.5/24", "interface": 2},
                {"address": "10.1.0.1/24", "interface": 0}],
    }
    assert pod_ips(result).ips == ["10.1.0.5", "fd00::5"]


def test_config_discovery(tmp_path: Path) -> None:
    with pytest.raises(NoNetworkConfig, match="does not exist"):
        load_default_network(str(tmp_path / "none"), ["/usr/lib/cni"])
    (tmp_path / "00-broken.conflist").write_text("{")
    (tmp_path / "05-missing.conflist").write_text(json.dumps(
        {"name": "m", "cniVersion": "1.0.0", "plugins": [{"type": "nonexistent-plugin"}]}))
    with pytest.raises(NoNetworkConfig) as e:
        load_default_network(str(tmp_path), ["/usr/lib/cni"])
    assert "not valid JSON" in str(e.value) and "nonexistent-plugin" in str(e.value)
    single = {"name": "s", "cniVersion": "0.4.0", "type": "loopback"}
    (tmp_path / "10-single.conf").write_text(json.dumps(single))
    net = load_default_network(str(tmp_path), ["/usr/lib/cni"])
    assert net.name == "s" and net.plugins[0]["type"] == "loopback"


def test_plugin_type_cannot_escape_bin_dir(tmp_path: Path) -> None:
    (tmp_path / "a.conflist").write_text(json.dumps({"name": "x", "plugins": [{"type": "../../bin/sh"}]}))
    with pytest.raises(NoNetworkConfig, match="not found"):
        load_default_network(str(tmp_path), ["/usr/lib/cni"])
    assert parse_config(tmp_path / "a.conflist").name == "x"


def test_pod_files(tmp_path: Path) -> None:
    assert "10.0.0.5\tweb" in hosts_file("web", ["10.0.0.5"])
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 1.1.1.1\n")
    assert resolv_conf(pb.DNSConfig(), host) == "nameserver 1.1.1.1\n"
    with pytest.raises(InvalidArgument, match="not a valid address"):
        resolv_conf(pb.DNSConfig(servers=["1.2.3.4 evil"]))


def test_net_dev_parsing() -> None:
    from cri_shim.stats.pod import network_usage

    text = ("Inter-|   Receive                            |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes packets errs drop ...\n"
            "    lo:  100  1 0 0 0 0 0 0   100  1 0 0 0 0 0 0\n"
            "  eth0: 5000 10 2 0 0 0 0 0  7000 12 3 0 0 0 0 0\n")
    u = network_usage(text, 1)
    assert u is not None and [i.name for i in u.interfaces] == ["eth0"]
    d = u.default_interface
    assert (d.rx_bytes.value, d.rx_errors.value, d.tx_bytes.value, d.tx_errors.value) == (5000, 2, 7000, 3)
