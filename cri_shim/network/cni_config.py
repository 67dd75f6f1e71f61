"""Finding the CNI network configuration to use, as the CNI libcni loader does.

Files ending .conflist, .conf or .json in the configured directory are read in
lexical order; the first one that parses and whose plugins all exist in a bin dir
is the pod network. A single-plugin .conf is wrapped into a conflist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")


@dataclass
class NetworkConfig:
    path: Path
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    raw: dict[str, Any]


class NoNetworkConfig(Exception):
    """No usable CNI configuration; the message says why."""


def find_plugin(plugin_type: str, bin_dirs: list[str]) -> Path | None:
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        return None
    for d in bin_dirs:
        candidate = Path(d) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def parse_config(path: Path) -> NetworkConfig:
    """Parse one file into a conflist; raise ValueError naming the problem."""
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be an object")
    if path.suffix == ".conflist" or "plugins" in raw:
        plugins = raw.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise ValueError(f"{path}: conflist has no plugins")
    else:
        plugins = [raw]
        raw = {"cniVersion": raw.get("cniVersion", ""), "name": raw.get("name", ""), "plugins": plugins}
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise ValueError(f"{path}: a plugin has no type")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: network has no name")
    return NetworkConfig(path, name, str(raw.get("cniVersion", "")), plugins, raw)


def load_default_network(conf_dir: str, bin_dirs: list[str]) -> NetworkConfig:
    d = Path(conf_dir)
    if not d.is_dir():
        raise NoNetworkConfig(f"CNI config directory {conf_dir} does not exist")
    files = sorted(p for p in d.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())
    if not files:
        raise NoNetworkConfig(f"no CNI configuration file in {conf_dir}")
    problems: list[str] = []
    for path in files:
        try:
            net = parse_config(path)
        except ValueError as e:
            problems.append(str(e))
            continue
        missing = [p["type"] for p in net.plugins if find_plugin(p["type"], bin_dirs) is None]
        if missing:
            problems.append(
                f"{path}: plugin(s) {', '.join(missing)} not found in {':'.join(bin_dirs)}"
            )
            continue
        return net
    raise NoNetworkConfig("no usable CNI configuration: " + "; ".join(problems))
