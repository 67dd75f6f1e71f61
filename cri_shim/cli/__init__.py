"""The `cri-shim` command: one module per subcommand (serve, config, images, install, doctor, seccomp);
this one parses and dispatches."""

from __future__ import annotations

import argparse
import sys

from cri_shim import __version__
from cri_shim.cli import config, doctor, images, install, seccomp, serve
from cri_shim.errors import CRIError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cri-shim", description="Kubernetes CRI runtime")
    parser.add_argument("--version", action="version", version=f"cri-shim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    config.add_parser(sub)
    images.add_parser(sub)
    install.add_parser(sub)
    doctor.add_parser(sub)
    seccomp.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CRIError as e:
        print(f"cri-shim: {e.message}", file=sys.stderr)
        return 2
