"""`cri-shim config`, and the configuration flags every subcommand takes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cri_shim.config import Config, load, to_toml

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--socket", help="CRI socket path (default /run/cri-shim/cri-shim.sock)")
    p.add_argument("--state-dir", dest="state_dir", help="runtime state (default /run/cri-shim)")
    p.add_argument("--root-dir", dest="root_dir", help="persistent data (default /var/lib/cri-shim)")
    p.add_argument("--log-level", dest="log_level", choices=LOG_LEVELS)
    p.add_argument("--log-format", dest="log_format", choices=("text", "json"),
                   help="text (default) or one JSON object per line")


def effective_config(args: argparse.Namespace) -> Config:
    """The configuration file (or the defaults) with the flags given on the command line over it."""
    overrides = {k: getattr(args, k) for k in ("socket", "state_dir", "root_dir", "log_level", "log_format")}
    return load(args.config, overrides)


def add_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="print the effective configuration as TOML")
    add_config_flags(config)
    config.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    sys.stdout.write(to_toml(effective_config(args)))
    return 0
