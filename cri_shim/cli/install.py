"""`cri-shim install`: the systemd unit, /etc/cri-shim/config.toml and /etc/crictl.yaml."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from cri_shim.install import install


def add_parser(sub: Any) -> None:
    p = sub.add_parser("install", help="install the systemd unit and default configuration files")
    p.add_argument("--root", default="/", help="install under this directory (default /)")
    p.add_argument("--executable", help="the cri-shim the unit runs (default: this one)")
    p.set_defaults(func=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    executable = args.executable or _this_executable()
    if not Path(executable).is_absolute():
        print(f"cri-shim install: --executable {executable!r} must be an absolute path", file=sys.stderr)
        return 2
    for item in install(Path(args.root), executable):
        print(f"{'wrote' if item.written else 'kept '} {item.path}")
    if args.root == "/":
        print("then: systemctl daemon-reload && systemctl enable --now cri-shim")
    return 0


def _this_executable() -> str:
    argv0 = Path(sys.argv[0])
    if argv0.name == "cri-shim" and argv0.exists():
        return str(argv0.resolve())
    return shutil.which("cri-shim") or str(Path(sys.executable).with_name("cri-shim"))
